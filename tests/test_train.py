import json
import math

import pytest
import torch

import charlm
from charlm.api import build_trainer
from charlm.checkpoint import load_checkpoint
from charlm.errors import CharLMError
from charlm.training.config import TrainConfig
from charlm.training.optim import lr_factor
from tests.helpers import REPO, params, read_metrics


def run_whole_and_interrupted(corpus, tmp_path, options, stop_at=7):
    """The same run twice: uninterrupted in tmp_path/full, and in tmp_path/split stopped
    (as by Ctrl-C) after step ``stop_at`` and resumed to the end. Returns both trainers."""
    full = build_trainer(corpus, out=tmp_path / "full", **options)
    full.run()
    first = build_trainer(corpus, out=tmp_path / "split", **options)

    def stop(event, data):
        if event == "step" and data["step"] == stop_at:
            first.stop_requested = True
    first.report = stop
    assert first.run()["status"] == "interrupted"
    resumed = build_trainer(resume=tmp_path / "split")
    assert resumed.pos.step == stop_at
    resumed.run()
    return full, resumed


def test_overfits_a_tiny_corpus(tmp_path, tiny_options):
    text = "the cat sat on the mat. " * 40
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(text)
    lm = charlm.train(corpus, out=tmp_path / "run", **tiny_options(
        hidden_dim=64, max_steps=150, lr=1e-2, val_fraction=0.0, eval_every=1000,
        save_every=1000))
    result = lm.evaluate(text[:200])
    assert result["loss_nats"] < 0.25, result  # a memorised sentence is nearly free
    assert lm.sample("the cat", length=20, temperature=0, seed=0) == " sat on the mat. the"


def test_same_seed_same_run(tmp_path, small_corpus, tiny_options):
    runs = []
    for name in ("a", "b"):
        trainer = build_trainer(small_corpus, out=tmp_path / name, **tiny_options())
        trainer.run()
        runs.append((params(trainer.model), read_metrics(tmp_path / name)))
    (pa, ma), (pb, mb) = runs
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert [m.get("loss") for m in ma] == [m.get("loss") for m in mb]


def test_run_directory_is_self_contained(tmp_path, small_corpus, tiny_options):
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **tiny_options())
    trainer.run()
    run = tmp_path / "run"
    for name in ("config.json", "vocab.json", "last.safetensors", "best.safetensors",
                 "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hidden_dim"] == 32 and config["train"]["bptt_len"] == 32
    evals = [m for m in read_metrics(run) if "val_loss" in m]
    assert [m["step"] for m in evals] == [10, 20]
    assert all(math.isclose(m["val_bpc"] * math.log(2), m["val_loss"], rel_tol=0.01)
               for m in evals)


def test_checkpoint_round_trip_gives_identical_logits(tmp_path, small_corpus, tiny_options,
                                                     device):
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **tiny_options())
    trainer.run()
    trainer.model.eval()
    text = "ROMEO: what light"
    ids = [trainer.vocab.eod_id] + trainer.vocab.encode(text).tolist()
    with torch.no_grad():
        expected = trainer.model(torch.tensor([ids], device=trainer.model.device))[0][0]
    ckpt = load_checkpoint(tmp_path / "run" / "last.safetensors")
    lm = charlm.load(tmp_path / "run", which="last", device=device)
    assert torch.equal(lm.logits(text), expected)
    assert ckpt.vocab.to_json() == trainer.vocab.to_json()


@pytest.mark.cpu_only  # cuDNN keeps its dropout state outside torch's generators
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_equals_uninterrupted_run(tmp_path, small_corpus, precision, tiny_options):
    options = tiny_options(dropout=0.1, num_layers=2, precision=precision)
    full, resumed = run_whole_and_interrupted(small_corpus, tmp_path, options)
    a, b = params(full.model), params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda d: [m["loss"] for m in read_metrics(d) if "loss" in m]
    assert losses(tmp_path / "full") == losses(tmp_path / "split")
    assert losses(tmp_path / "full")[-1] < losses(tmp_path / "full")[0]  # it learns
    assert resumed.config.precision == precision


def test_resume_refuses_changed_model_options(tmp_path, small_corpus, tiny_options):
    build_trainer(small_corpus, out=tmp_path / "run", **tiny_options()).run()
    with pytest.raises(CharLMError, match="--hidden "):
        build_trainer(resume=tmp_path / "run", hidden_dim=64)
    # Stopping options may change: train further.
    more = build_trainer(resume=tmp_path / "run", max_steps=25)
    assert more.run()["step"] == 25


def test_existing_run_is_not_overwritten(tmp_path, small_corpus, tiny_options):
    build_trainer(small_corpus, out=tmp_path / "run", **tiny_options()).run()
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    with pytest.raises(CharLMError, match="already holds a run"):
        build_trainer(small_corpus, out=tmp_path / "run", **tiny_options())
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before


def test_corpus_shorter_than_one_chunk(tmp_path, tiny_options):
    f = tmp_path / "short.txt"
    f.write_text("too short")
    with pytest.raises(CharLMError, match="shorter than one chunk"):
        build_trainer(f, out=tmp_path / "run", **tiny_options(val_fraction=0.0))


def test_nonfinite_steps_are_skipped_then_training_stops(tmp_path, small_corpus, tiny_options):
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **tiny_options(max_steps=40))
    original = trainer.model.forward

    def poisoned(*args, **kwargs):
        logits, state = original(*args, **kwargs)
        if trainer.pos.step >= 12:
            logits = logits * float("nan")
        return logits, state
    trainer.model.forward = poisoned
    with pytest.raises(CharLMError, match="lower --lr"):
        trainer.run()
    skipped = [m for m in read_metrics(tmp_path / "run") if m.get("skipped")]
    assert len(skipped) == 5
    ckpt = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ckpt.info["step"] == 10  # the last good checkpoint is intact
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())


def test_lr_schedule_warms_up_and_decays():
    cfg = TrainConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(cfg, 9, 0.0) == pytest.approx(1.0)
    assert lr_factor(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_factor(cfg, 100, 1.0) == pytest.approx(0.1)
    lin = TrainConfig(warmup_steps=0, schedule="linear", min_lr_ratio=0.0)
    assert lr_factor(lin, 5, 0.25) == pytest.approx(0.75)


def test_epochs_stop_after_whole_passes(tmp_path, small_corpus, tiny_options):
    trainer = build_trainer(small_corpus, out=tmp_path / "run",
                            **tiny_options(max_steps=None, epochs=2, eval_every=1000))
    summary = trainer.run()
    assert summary["step"] == 2 * trainer.task.layout.chunks_per_epoch
    assert summary["epoch"] == 2 and trainer.pos.batch == 0


def test_many_short_documents_train_with_resets(tmp_path, tiny_options):
    names = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper"] * 60
    f = tmp_path / "names.txt"
    f.write_text("\n".join(names) + "\n")
    trainer = build_trainer(f, out=tmp_path / "run", doc_separator="\n",
                            **tiny_options(max_steps=300, lr=1e-2, hidden_dim=64, eval_every=1000))
    resets = trainer.task.layout.batch(0).reset.sum()
    assert resets > trainer.task.layout.num_lanes  # documents start inside lanes
    trainer.run()
    lm = charlm.load(tmp_path / "run")
    samples = lm.sample(length=200, temperature=0.5, seed=0).split("\n")
    # Each document the model writes ends with EOD, printed as the separator: names, one a line.
    assert sum(s in names for s in samples) >= len(samples) // 2


def test_bpe_run_trains_evaluates_and_samples(tmp_path, small_corpus, tiny_options):
    lm = charlm.train(small_corpus, out=tmp_path / "run", vocab="bpe", vocab_size=300,
                      **tiny_options())
    assert lm.vocab.kind == "bpe"
    text = "KING HENRY: Now, lords, what say you? 日本"
    r = lm.evaluate(text)
    assert r["chars"] == len(text) and r["unknown"] == 0
    assert r["symbols"] == len(lm.vocab.encode(text)) + 1  # the tokens and the final EOD
    assert r["bpc"] == pytest.approx(r["loss_nats"] * r["symbols"] / r["chars"] / math.log(2))
    out = lm.sample("KING", length=40, temperature=1.0, seed=0)
    assert isinstance(out, str) and len(out) == 40


@pytest.mark.slow
def test_bundled_corpus_ships_in_the_wheel(tmp_path):
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path / "wheel"), str(REPO)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip()[:200]}")
    wheel = next((tmp_path / "wheel").glob("charlm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "charlm/data/tinyshakespeare.txt" in names
    packages = {p.parent.relative_to(REPO).as_posix()
                for p in (REPO / "charlm").rglob("__init__.py")}
    assert packages and all(f"{p}/__init__.py" in names for p in packages)  # every subpackage


def test_eval_splits_text_by_the_runs_document_separator(tmp_path, tiny_options):
    names = ["anna", "bob", "carla", "dmitri", "eve"] * 100
    f = tmp_path / "names.txt"
    f.write_text("\n".join(names) + "\n")
    lm = charlm.train(f, out=tmp_path / "run", doc_separator="\n",
                      **tiny_options(max_steps=30, eval_every=1000))
    r = lm.evaluate("anna\nbob\ncarla\n")
    assert r["unknown"] == 0  # newlines separate documents, they are not unknown characters
    assert r["chars"] == len("annabobcarla") and r["symbols"] == 12 + 3
    with pytest.raises(CharLMError, match="no text"):
        lm.evaluate("")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_records_its_choice(tmp_path, small_corpus, monkeypatch, native, tiny_options):
    import charlm.devices as devices

    monkeypatch.setattr(devices, "native_bf16", lambda device: native)
    trainer = build_trainer(small_corpus, out=tmp_path / "run",
                            **tiny_options(precision="auto", max_steps=4))
    chosen = "bf16" if native else "fp32"
    assert trainer.config.precision == chosen
    assert (trainer.compute_dtype is torch.bfloat16) == native
    trainer.run()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["precision"]
    assert saved == chosen
    monkeypatch.setattr(devices, "native_bf16", lambda device: not native)  # another machine
    assert build_trainer(resume=tmp_path / "run", max_steps=6).config.precision == chosen
    # The precision may change on resume; "auto" is resolved again on the new machine.
    other = "fp32" if native else "bf16"
    assert build_trainer(resume=tmp_path / "run", max_steps=6,
                         precision="auto").config.precision == other
    resumed = build_trainer(resume=tmp_path / "run", max_steps=6, precision="fp32")
    assert resumed.config.precision == "fp32" and resumed.run()["step"] == 6


CELL_OPTIONS = {
    "irnn": dict(cell="irnn"),
    "lstm-learned-h0": dict(cell="lstm", learn_init_state=True),
    "gru-learned-h0": dict(cell="gru", learn_init_state=True),
    "irnn-learned-h0": dict(cell="irnn", learn_init_state=True),
    "leaky": dict(cell="leaky", leak=0.7),
    "leaky-learned-leak": dict(cell="leaky", learn_leak=True, recurrent_dropout=0.2),
    "lstm-layer-norm": dict(cell="lstm", layer_norm=True),
    "gru-layer-norm": dict(cell="gru", layer_norm=True),
    "rnn-layer-norm": dict(cell="rnn", layer_norm=True),
    "lstm-recurrent-dropout": dict(cell="lstm", recurrent_dropout=0.25),
    "gru-recurrent-dropout": dict(cell="gru", recurrent_dropout=0.25, weight_drop=0.2),
    "rnn-recurrent-dropout": dict(cell="rnn", recurrent_dropout=0.25, layer_norm=True),
    "jordan": dict(cell="jordan"),
    "jordan-all-options": dict(cell="jordan", layer_norm=True, recurrent_dropout=0.2,
                               learn_init_state=True),
}


@pytest.mark.parametrize("extra", list(CELL_OPTIONS.values()), ids=list(CELL_OPTIONS))
def test_each_cell_and_option_trains_resumes_evaluates_and_samples(tmp_path, small_corpus, extra,
                                                                   tiny_options, device):
    options = tiny_options(num_layers=2, **extra)
    full, resumed = run_whole_and_interrupted(small_corpus, tmp_path, options)
    a, b = params(full.model), params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if extra.get("learn_init_state"):
        assert any(k.startswith("backbone.init_state") for k in a)
        assert any(a[k].abs().sum() > 0 for k in a
                   if k.startswith("backbone.init_state"))  # trained
    lm = charlm.load(tmp_path / "split", which="last", device=device)
    assert lm.model.config.cell == extra["cell"]
    text = "ROMEO: what light"
    with torch.no_grad():
        resumed.model.eval()
        ids = [resumed.vocab.eod_id] + resumed.vocab.encode(text).tolist()
        expected = resumed.model(torch.tensor([ids], device=resumed.model.device))[0][0]
    assert torch.equal(lm.logits(text), expected)  # the checkpoint gives identical logits
    result = lm.evaluate(text)
    assert result["chars"] == len(text) and math.isfinite(result["loss_nats"])
    assert len(lm.sample("KING", length=20, temperature=0.8, seed=3)) == 20


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adam", "adamw"])
def test_every_optimizer_trains(tmp_path, small_corpus, optimizer, tiny_options):
    lr = {"sgd": 1.0, "rmsprop": 3e-3, "adam": 1e-2, "adamw": 1e-2}[optimizer]
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **tiny_options(
        optimizer=optimizer, lr=lr, max_steps=60, eval_every=1000, save_every=1000))
    trainer.run()
    expected = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
                "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    assert type(trainer.optimizer) is expected
    if optimizer in ("sgd", "rmsprop"):
        assert trainer.optimizer.param_groups[0]["momentum"] == 0.9
    losses = [m["loss"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3, losses


@pytest.mark.parametrize("clip", [dict(clip_norm=0.05, clip_value=0.0),
                                  dict(clip_norm=0.0, clip_value=1e-3),
                                  dict(clip_norm=0.0, clip_value=0.0)],
                         ids=["by norm", "by value", "off"])
def test_clipping_and_the_logged_norm_is_taken_before_it(tmp_path, small_corpus, clip, tiny_options):
    """Plain SGD with lr 1 and nothing else: each weight moves by exactly minus its (clipped)
    gradient, so the clipping can be read off the update."""
    trainer = build_trainer(small_corpus, out=tmp_path / "run", **tiny_options(
        optimizer="sgd", lr=1.0, momentum=0.0, warmup_steps=0, schedule="constant",
        weight_decay=0.0, max_steps=1, **clip))
    before = params(trainer.model)
    out = trainer.train_step()
    after = params(trainer.model)
    delta = torch.cat([(after[k] - before[k]).flatten() for k in before])
    moved = float(delta.norm())
    if clip["clip_norm"]:
        assert out["grad_norm"] > 0.05  # logged before clipping
        assert moved == pytest.approx(0.05, rel=1e-4)
    elif clip["clip_value"]:
        assert float(delta.abs().max()) == pytest.approx(1e-3, abs=1e-6)  # float32 weights
        assert moved < out["grad_norm"]
    else:
        assert moved == pytest.approx(out["grad_norm"], rel=1e-4)
