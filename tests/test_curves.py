"""Training curves: curves.png written by a run, and `charlm plot` over several runs."""

import json

import pytest
from typer.testing import CliRunner

from charlm.api import build_trainer
from charlm.checkpoint import load_checkpoint
from charlm.cli import app
from charlm.curves import figure, moving_average, read_curves
from charlm.errors import CharLMError

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def two_runs(tmp_path, small_corpus, tiny_options):
    runs = []
    for name, hidden in (("small", 16), ("wider", 48)):
        build_trainer(small_corpus, out=tmp_path / name,
                      **tiny_options(hidden_dim=hidden, max_steps=30, plot=True)).run()
        runs.append(tmp_path / name)
    return runs


def test_a_run_draws_its_curves_and_they_mark_its_best_checkpoint(two_runs):
    run = two_runs[0]
    assert (run / "curves.png").read_bytes().startswith(PNG)
    curves = read_curves(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert curves.steps == sorted({r["step"] for r in records if "loss" in r})
    best = load_checkpoint(run / "best.safetensors").info
    assert curves.val_steps[curves.best] == best["step"]
    assert curves.best_value == pytest.approx(
        next(r["val_bpc"] for r in records if r.get("best") and r["step"] == best["step"]))
    # The figure marks that point: the star of the lower panel sits on it.
    fig = figure([curves])
    stars = [line for line in fig.axes[1].lines if line.get_marker() == "*" and
             len(line.get_xdata())]
    assert [(s.get_xdata()[0], s.get_ydata()[0]) for s in stars] == [
        (best["step"], curves.best_value)]


def test_the_time_axis_and_several_runs(two_runs):
    curves = [read_curves(r) for r in two_runs]
    fig = figure(curves, x="time")
    top = fig.axes[0]
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["small", "wider"]
    drawn = [line.get_xdata() for line in top.lines]
    assert list(drawn[0]) == curves[0].times and list(drawn[2]) == curves[1].times


def test_metrics_cut_short_or_repeated_are_read_as_the_run_left_them(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": 1, "loss": 4.0, "time": 0.5}, {"step": 2, "loss": 3.0, "time": 1.0},
             {"step": 2, "val_loss": 2.0, "val_bpc": 2.9, "best": True, "time": 1.1},
             {"step": 3, "loss": 2.5, "time": 1.5},
             {"step": 4, "loss": 2.0, "time": 2.0},
             {"step": 4, "val_loss": 2.1, "val_bpc": 3.0, "best": False, "time": 2.1},
             {"step": 4, "val_loss": 2.1, "val_bpc": 3.0, "best": False, "time": 2.2},
             {"step": 5, "loss": float("nan"), "skipped": True, "time": 2.3}]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 6, "lo'
    (run / "metrics.jsonl").write_text(text)
    c = read_curves(run)  # the skipped step (its loss NaN) and the line cut short are left out
    assert c.steps == [1, 2, 3, 4] and c.losses == [4.0, 3.0, 2.5, 2.0]
    assert c.val_steps == [2, 4] and c.val_times == [1.1, 2.2] and c.best == 0
    (run / "metrics.jsonl").write_text('{"step": 2, "val_bpc": 2.9}\n')
    with pytest.raises(CharLMError, match="no training steps"):
        read_curves(run)
    assert moving_average([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]


def test_classifier_runs_plot_accuracy_and_do_not_mix_with_language_models(tmp_path, two_runs):
    run = tmp_path / "clf"
    run.mkdir()
    lines = [{"step": 1, "loss": 0.7, "time": 0.1}, {"step": 2, "loss": 0.6, "time": 0.2},
             {"step": 2, "val_accuracy": 0.6, "val_f1": 0.5, "val_loss": 0.6, "best": True},
             {"step": 3, "val_accuracy": 0.8, "val_f1": 0.7, "val_loss": 0.5, "best": True},
             {"step": 4, "val_accuracy": 0.7, "val_f1": 0.7, "val_loss": 0.5, "best": False}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    c = read_curves(run)
    assert c.kind == "classifier" and c.best_value == 0.8
    assert "accuracy" in figure([c]).axes[1].get_ylabel()
    r = runner.invoke(app, ["plot", str(run), str(two_runs[0]), "--out",
                            str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "plot them separately" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_plot_command_writes_new_files_and_never_overwrites(tmp_path, two_runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["plot", *map(str, two_runs)]
    for name in ("curves.png", "curves-2.png"):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.stderr
        assert (tmp_path / name).read_bytes().startswith(PNG) and name in r.stderr
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"keep me")
    for bad, message in ((["--out", str(mine)], "exists"), (["--x", "wall"], "--x must be"),
                         (["--out", str(tmp_path / "no" / "dir.png")], "no directory")):
        r = runner.invoke(app, [*args, *bad])
        assert r.exit_code == 1 and message in r.stderr and len(r.stderr.splitlines()) == 1
    r = runner.invoke(app, ["plot", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no such run directory" in r.stderr
    assert mine.read_bytes() == b"keep me"
    assert not (tmp_path / "curves-3.png").exists()


def test_no_plot_leaves_no_figure(tmp_path, small_corpus, tiny_options):
    build_trainer(small_corpus, out=tmp_path / "run", **tiny_options(plot=False)).run()
    assert not (tmp_path / "run" / "curves.png").exists()
    assert (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_figure_that_cannot_be_written_is_reported_once_and_training_goes_on(
        tmp_path, small_corpus, tiny_options, monkeypatch):
    from charlm.training.run_dir import RunDirectory

    calls, events = [], []

    def broken(self):
        calls.append(1)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(RunDirectory, "draw_curves", broken)
    monkeypatch.setattr("charlm.training.loop.PLOT_SECONDS", 0.0)  # draw at every evaluation
    summary = build_trainer(small_corpus, out=tmp_path / "run",
                            report=lambda event, data: events.append((event, data)),
                            **tiny_options(plot=True, max_steps=30)).run()
    assert summary["status"] == "done" and summary["step"] == 30
    warnings = [d["message"] for e, d in events if e == "warning"]
    assert len(calls) == 1 and len(warnings) == 1 and "training goes on" in warnings[0]
    assert (tmp_path / "run" / "best.safetensors").exists()


def test_a_users_curves_png_is_not_taken_for_a_runs_own(tmp_path, small_corpus, tiny_options):
    out = tmp_path / "results"
    out.mkdir()
    (out / "curves.png").write_bytes(b"my figure")
    with pytest.raises(CharLMError, match="curves.png"):
        build_trainer(small_corpus, out=out, **tiny_options(plot=True)).run()
    assert (out / "curves.png").read_bytes() == b"my figure"
