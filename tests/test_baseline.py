"""The baselines as runs like any other: trained by `charlm baseline`, then evaluated, sampled
and resumed through the ordinary commands."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import charlm
from charlm.checkpoint import load_checkpoint
from charlm.cli import app
from tests.helpers import params


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _evaluated(run_dir, text):
    result = _run("eval", text, "--checkpoint", run_dir, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_ngram_run_evaluates_and_samples_through_the_ordinary_commands(tmp_path,
                                                                          small_corpus):
    run = tmp_path / "ng"
    result = _run("baseline", "ngram", small_corpus, "--order", 4, "--out", run)
    assert result.exit_code == 0, result.output
    lm = charlm.load(run)
    assert lm.kind == "ngram-lm"
    held = tmp_path / "held.txt"
    held.write_text("First Citizen:\nBefore we proceed", encoding="utf-8")
    figures = _evaluated(run, held)
    assert figures["bpc"] == lm.evaluate("First Citizen:\nBefore we proceed")["bpc"]
    sampled = _run("sample", "--checkpoint", run, "--length", 50, "--seed", 3)
    assert sampled.exit_code == 0 and len(sampled.stdout) > 40
    assert sampled.stdout == _run("sample", "--checkpoint", run, "--length", 50,
                                  "--seed", 3).stdout
    bad = _run("baseline", "ngram", small_corpus, "--order", 0, "--out", tmp_path / "bad")
    assert bad.exit_code == 1 and "--order must be an integer from 1" in bad.output
    assert not (tmp_path / "bad").exists()
    taken = _run("baseline", "ngram", small_corpus, "--order", 2, "--out", run)
    assert taken.exit_code == 1 and "already holds a run" in taken.output


def test_a_window_run_trains_with_the_loop_and_resumes_exactly(tmp_path, small_corpus):
    from charlm.api import build_trainer

    options = dict(context=5, hidden_dim=16, embed_dim=8, batch_size=4, bptt_len=16,
                   eval_every=10, save_every=10, plot=False, device="cpu", max_steps=20)
    full = build_trainer(small_corpus, tmp_path / "full", kind="window-lm", **options)
    full.run()
    first = build_trainer(small_corpus, tmp_path / "split", kind="window-lm", **options)
    first.report = lambda event, data: setattr(first, "stop_requested",
                                               event == "step" and data["step"] == 15)
    assert first.run()["status"] == "interrupted"
    resumed = _run("baseline", "window", "--resume", tmp_path / "split")
    assert resumed.exit_code == 0, resumed.output
    a = load_checkpoint(tmp_path / "full" / "last.safetensors").model
    b = load_checkpoint(tmp_path / "split" / "last.safetensors").model
    assert a.kind == "window-lm"
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert _run("sample", "--checkpoint", tmp_path / "full", "--length", 20,
                "--seed", 1).exit_code == 0
    wrong = _run("train", "--resume", tmp_path / "full")
    assert wrong.exit_code == 1 and "not a language model's" in wrong.output
    bad = _run("baseline", "window", small_corpus, "--context", 0, "--out", tmp_path / "b")
    assert bad.exit_code == 1 and "--context" in bad.output


def test_an_hmm_run_keeps_its_best_pass_and_evaluates(tmp_path, small_corpus):
    run = tmp_path / "hmm"
    result = _run("baseline", "hmm", small_corpus, "--states", 4, "--max-iterations", 3,
                  "--out", run)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    best = min(records, key=lambda r: r["val_loss"])
    lm = charlm.load(run)
    assert lm.kind == "hmm-lm" and lm.config.states == 4
    assert abs(lm.evaluate()["loss_nats"] - best["val_loss"]) < 1e-6
    assert _run("sample", "--checkpoint", run, "--length", 20, "--seed", 1).exit_code == 0
    bad = _run("baseline", "hmm", small_corpus, "--states", 1, "--out", tmp_path / "b")
    assert bad.exit_code == 1 and "--states" in bad.output


def test_inspect_reports_every_baseline(tmp_path, small_corpus, small_text):
    """`charlm inspect` reads any language model: its bits are the evaluation's, and its units
    are what the kind carries (the window's hidden layer, the HMM's belief over its states,
    none for an n-gram)."""
    import numpy as np
    import pytest

    from charlm.report import InspectConfig, build_report
    from charlm.report.trace import trace

    made = {
        "ngram": ["baseline", "ngram", small_corpus, "--order", 3],
        "hmm": ["baseline", "hmm", small_corpus, "--states", 5, "--max-iterations", 2],
        "window": ["baseline", "window", small_corpus, "--context", 4, "--hidden", 16,
                   "--max-steps", 10, "--no-plot"],
    }
    units = {"ngram": None, "hmm": 5, "window": 16}
    for name, args in made.items():
        assert _run(*args, "--out", tmp_path / name).exit_code == 0
        lm = charlm.load(tmp_path / name)
        split = lm.encode([small_text[:900], "A second document."])
        traced = trace(lm.model, np.asarray(split.tokens), lm.vocab.eod_id)
        exact = lm.evaluate(split, lanes=1)
        assert np.nansum(traced.bits) / split.chars == pytest.approx(exact["bpc"], abs=1e-4)
        _, data = build_report(lm, split.tokens, InspectConfig(length=5000), "text")
        assert [s["units"] for s in data["series"]] == ([units[name]] if units[name] else [])
        if name == "hmm":  # a belief: a distribution over the states at every symbol
            belief = traced.layers[0]["h"]
            assert belief.shape == (len(split.tokens), 5)
            assert np.allclose(belief.sum(axis=1), 1, atol=1e-5) and belief.min() >= 0
        page = _run("inspect", "--checkpoint", tmp_path / name, "--out",
                    tmp_path / f"{name}.html")
        assert page.exit_code == 0, page.output
    no_units = _run("inspect", "--checkpoint", tmp_path / "ngram", "--unit", "1:h:0",
                    "--out", tmp_path / "x.html")
    assert no_units.exit_code == 1 and "has no units" in no_units.output
    assert not (tmp_path / "x.html").exists()


def test_a_model_that_reads_further_back_than_the_text_is_refused(tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("To be, or not to be.\n", encoding="utf-8")
    for args, flag in ((["ngram", tiny, "--order", 64], "--order 64"),
                       (["window", tiny, "--context", 500, "--bptt", 8, "--batch-size", 2],
                        "--context 500")):
        result = _run("baseline", *args, "--out", tmp_path / "run")
        assert result.exit_code == 1, result.output
        assert f"{flag} is longer than the training text" in result.output
        assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_an_hmm_run_spends_its_time_budget_and_no_more(tmp_path, small_corpus, monkeypatch):
    """--max-time: passes go on while the time so far and the longest cycle (a pass, its
    validation and saves) fit; on a clock where each pass takes 10 s, a 95 s budget holds
    nine."""
    import types

    import charlm.baseline_runs as runs
    import charlm.training.em as em_module

    now = [1000.0]
    monkeypatch.setattr(runs, "time", types.SimpleNamespace(perf_counter=lambda: now[0],
                                                            time=lambda: now[0]))
    losses = iter(5.0 - 0.1 * k for k in range(100))

    def ten_seconds(model, split, config):
        now[0] += 10.0
        return {"train_loss": next(losses), "symbols": 1}
    monkeypatch.setattr(em_module, "em_pass", ten_seconds)
    summary = runs.fit_hmm_run([small_corpus], tmp_path / "hmm", {},
                               {"states": 3, "max_time": 95.0})
    assert summary["iterations"] == 9 and summary["seconds"] == 90.0
