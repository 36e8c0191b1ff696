"""Many-to-one classification: the model's equivalences, a classifier from a language model,
the commands end to end, resume, the probe, and the fine-tuning options."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlm.checkpoint import load_checkpoint
from charlm.classify import encode, padded, predict_stream
from charlm.classify_runs import load_classifier, new_classifier_run, resume_classifier_run
from charlm.cli import app
from charlm.errors import CharLMError
from charlm.models import ClassifierConfig, LMConfig, RecurrentClassifier, RecurrentLM
from charlm.models.classifier import from_language_model
from charlm.text.vocab import CharVocab
from charlm.training.config import TrainConfig
from charlm.training.optim import lr_factor, make_optimizer, unfrozen_from
from tests.helpers import params, read_metrics, same_weights

runner = CliRunner()
TINY = ["--preset", "tiny", "--device", "cpu"]
WORDS = "the a film plot actor scene story music".split()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def labelled_file(path, n=160, seed=0):
    """Sentences whose label is whether "good" or "bad" is in them, one per line as
    "label text" (the layout of Kim 2014's files)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(WORDS, size=int(rng.integers(2, 9))))
        words.insert(int(rng.integers(0, len(words) + 1)), "good" if label else "bad")
        lines.append(f"{label} {' '.join(words)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def texts_of(vocab, strings):
    return encode(vocab, strings).ids


def _model(vocab, **options):
    torch.manual_seed(0)
    config = ClassifierConfig.for_vocab(vocab, labels=("a", "b", "c"), hidden_dim=12,
                                        embed_dim=6, num_layers=2, **options)
    return RecurrentClassifier(config).eval()


VOCAB = CharVocab("abcdefghij klm")
STRINGS = ["abc", "a", "kkl mmabcdefg hij", "jjj jj", "abcdefghij klm abcdefghij" * 3, "mad"]
CELLS = [dict(cell="lstm"), dict(cell="gru"), dict(cell="rnn"), dict(cell="irnn"),
         dict(cell="lstm", layer_norm=True), dict(cell="gru", recurrent_dropout=0.2),
         dict(cell="leaky"), dict(cell="jordan"), dict(cell="lstm", learn_init_state=True)]


def _one_at_a_time(model, ids):
    return torch.cat([model(*padded(ids, [i], "cpu")) for i in range(len(ids))])


@pytest.mark.parametrize("options", CELLS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                  o.items()))
@pytest.mark.parametrize("pooling", ["last", "concat"])
def test_a_padded_batch_gives_the_logits_of_one_text_at_a_time(options, pooling):
    model = _model(VOCAB, pooling=pooling, **options)
    ids = texts_of(VOCAB, STRINGS)
    with torch.no_grad():
        alone = _one_at_a_time(model, ids)
        batch = model(*padded(ids, list(range(len(ids))), "cpu"))
        assert torch.allclose(batch, alone, atol=1e-5)
        if model.backbone.packs:
            packed = model(*padded(ids, list(range(len(ids))), "cpu"), packed=True)
            assert torch.allclose(packed, alone, atol=1e-5)
        # Read in chunks of 4 symbols with the state carried: the same as whole.
        model.config = replace(model.config, max_length=4)
        chunked = model(*padded(ids, list(range(len(ids))), "cpu"))
        assert torch.allclose(chunked, alone, atol=1e-5)
        if model.backbone.packs:
            packed = model(*padded(ids, list(range(len(ids))), "cpu"), packed=True)
            assert torch.allclose(packed, alone, atol=1e-5)
    probs = torch.softmax(batch, -1)
    assert torch.allclose(probs.sum(-1), torch.ones(len(ids)))


def test_pooling_never_reads_padding():
    model = _model(VOCAB, pooling="concat")
    ids = texts_of(VOCAB, ["abc", "abcdefghij"])
    x, lengths = padded(ids, [0, 1], "cpu")
    with torch.no_grad():
        before = model(x, lengths)
        x[0, 3:] = VOCAB.encode("k")[0]  # what stands after the first text's end changes
        assert torch.equal(model(x, lengths), before)


def test_step_by_step_cells_refuse_packing():
    model = _model(VOCAB, cell="leaky")
    with pytest.raises(CharLMError, match="step by step"):
        model(*padded(texts_of(VOCAB, ["abc"]), [0], "cpu"), packed=True)


@pytest.mark.parametrize("cell", ["lstm", "gru", "jordan"])
def test_a_classifier_from_a_language_model_has_its_backbone_outputs(cell):
    torch.manual_seed(1)
    lm = RecurrentLM(LMConfig.for_vocab(VOCAB, cell=cell, num_layers=2, hidden_dim=16,
                                        embed_dim=8)).eval()
    classifier = from_language_model(lm, ("neg", "pos"), pooling="last", dropout=0.3).eval()
    x = torch.from_numpy(VOCAB.encode("abc kl mad").astype(np.int64))[None]
    with torch.no_grad():
        assert torch.equal(classifier.backbone(x, readout=classifier.readout)[0],
                           lm.backbone(x, readout=lm.head)[0])
        # The pooled "last" feature is the language model's feature after the last symbol.
        feats = classifier.features(x, torch.tensor([x.shape[1]]))
        assert torch.allclose(feats[0], lm.backbone(x, readout=lm.head)[0][0, -1], atol=1e-6)
    assert classifier.config.dropout == 0.3 and classifier.config.hidden_dim == 16
    with pytest.raises(CharLMError, match="--hidden"):
        from_language_model(lm, ("neg", "pos"), hidden_dim=32)


# ----- training through the loop ----------------------------------------------------------------
def _train(tmp_path, data, out="run", **options):
    options = {"max_steps": 60, "eval_every": 30, "save_every": 30, "lr": 1e-2,
               "warmup_steps": 0, "device": "cpu", **options}
    trainer = new_classifier_run([data], None, tmp_path / out, "tiny", {}, options)
    return trainer, trainer.run()


RUNS = {"bucketed": {"batching": "bucketed"},
        "packed, weight drop": {"batching": "packed", "weight_drop": 0.2},
        "ulmfit, bf16": {"layer_lr_factor": 2.6, "schedule": "slanted",
                         "gradual_unfreeze": True, "precision": "bf16"}}


@pytest.mark.parametrize("options", RUNS.values(), ids=RUNS.keys())
def test_a_classifier_learns_and_resumes_exactly(tmp_path, options):
    data = labelled_file(tmp_path / "data.txt")
    full, summary = _train(tmp_path, data, "full", **options)
    assert summary["best"]["val_accuracy"] >= 0.8  # chance is 0.5
    evals = [m for m in read_metrics(tmp_path / "full") if "val_accuracy" in m]
    assert [m["step"] for m in evals] == [30, 60]
    split = new_classifier_run([data], None, tmp_path / "split", "tiny", {},
                               {"max_steps": 60, "eval_every": 30, "save_every": 30,
                                "lr": 1e-2, "warmup_steps": 0, "device": "cpu", **options})
    split.report = lambda event, d: setattr(split, "stop_requested",
                                            event == "step" and d["step"] == 45)
    assert split.run()["status"] == "interrupted"
    resumed = resume_classifier_run(tmp_path / "split", {})
    assert resumed.pos.step == 45
    resumed.run()
    assert same_weights(params(full.model), params(resumed.model))
    losses = lambda run: [m["loss"] for m in read_metrics(tmp_path / run) if "loss" in m]
    assert losses("full") == losses("split")


def test_resume_refuses_changed_data(tmp_path):
    data = labelled_file(tmp_path / "data.txt")
    trainer = new_classifier_run([data], None, tmp_path / "run", "tiny", {},
                                 {"max_steps": 20, "save_every": 10, "device": "cpu"})
    trainer.report = lambda event, d: setattr(trainer, "stop_requested",
                                              event == "step" and d["step"] == 10)
    trainer.run()
    labelled_file(data, seed=5)
    with pytest.raises(CharLMError, match="changed since the run started"):
        resume_classifier_run(tmp_path / "run", {})


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    data = labelled_file(tmp_path / "data.txt")
    trainer, _ = _train(tmp_path, data, max_steps=10)
    ckpt = load_classifier(tmp_path / "run" / "last.safetensors")  # the final weights
    ids = texts_of(ckpt.vocab, ["good film", "bad actor plot"])
    x, lengths = padded(ids, [0, 1], "cpu")
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(ckpt.model.eval()(x, lengths), trainer.model(x, lengths))
    assert ckpt.model.config.labels == ("0", "1")
    assert ckpt.vocab.to_json() == trainer.task.vocab.to_json()


@pytest.mark.parametrize("balance", [False, True])
def test_balance_weights_classes_by_inverse_frequency(tmp_path, balance):
    data = tmp_path / "data.txt"
    data.write_text("".join(f"{'1' if i % 4 == 0 else '0'} text {i}\n" for i in range(80)))
    trainer = new_classifier_run([data], None, tmp_path / "run", "tiny", {},
                                 {"balance": balance, "device": "cpu", "val_fraction": 0.0})
    task, model = trainer.task, trainer.model.eval()  # no dropout: the same logits twice
    rows = task.batches(0)[0]
    total, count = task.train_loss(model, 0, 0)
    # By hand: each text's cross-entropy, weighted by n / (classes x its class's count).
    x, lengths = padded(task.train.encoded.ids, rows, "cpu")
    log_p = torch.log_softmax(model(x, lengths).float(), -1)
    y = task.train.labels[rows]
    counts = np.bincount(task.train.labels)
    weight = len(task.train) / (2 * counts[y]) if balance else np.ones(len(y))
    expected = -(torch.from_numpy(weight).float() * log_p[torch.arange(len(y)), y]).sum()
    assert count == len(rows) and torch.allclose(total, expected, rtol=1e-5)


def test_predict_stream_reads_lazily_in_order(tmp_path):
    data = labelled_file(tmp_path / "data.txt")
    _train(tmp_path, data, max_steps=10)
    ckpt = load_classifier(tmp_path / "run")

    def endless():
        i = 0
        while True:
            yield f"text {i}"
            i += 1
    stream = predict_stream(ckpt.model, ckpt.vocab, endless(), top=2, read_at_once=8)
    first = [next(stream) for _ in range(20)]  # an endless input is never read whole
    assert [t for t, _ in first] == [f"text {i}" for i in range(20)]
    for _, ranked in first:
        assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1]
        assert abs(sum(p for _, p in ranked) - 1) < 1e-5  # two labels: all the mass


# ----- the commands -----------------------------------------------------------------------------
@pytest.fixture
def trained(tmp_path):
    data = labelled_file(tmp_path / "data.txt")
    r = run("classify", "train", data, "--out", tmp_path / "clf", *TINY, "--max-steps", "40",
            "--lr", "0.01")
    assert r.exit_code == 0, r.stderr
    assert "labels: 0 50%, 1 50%" in r.stderr and "best val accuracy" in r.stderr
    return tmp_path / "clf"


def test_eval_json_table_and_plot(tmp_path, trained):
    held = labelled_file(tmp_path / "held.txt", n=40, seed=3)
    r = run("classify", "eval", held, "--checkpoint", trained, "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    for key in ("accuracy", "macro_f1", "examples", "per_class", "confusion"):
        assert key in result
    assert result["examples"] == 40 and sum(map(sum, result["confusion"])) == 40
    assert set(result["per_class"]) == {"0", "1"}
    assert sum(c["support"] for c in result["per_class"].values()) == 40
    correct = sum(result["confusion"][i][i] for i in range(2))
    assert result["accuracy"] == pytest.approx(correct / 40)
    r = run("classify", "eval", held, "--checkpoint", trained, "--plot", tmp_path / "cm.png")
    assert r.exit_code == 0, r.stderr
    assert "accuracy" in r.stdout and "confusion matrix" in r.stdout
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (tmp_path / "cm.png").read_bytes()
    r = run("classify", "eval", held, "--checkpoint", trained, "--plot", tmp_path / "cm.png")
    assert r.exit_code == 1 and "exists" in r.stderr
    assert (tmp_path / "cm.png").read_bytes() == before


def test_eval_counts_an_unseen_label_as_wrong(tmp_path, trained):
    held = tmp_path / "held.txt"
    held.write_text("0 bad film\n1 good film\n7 a film\n")
    r = run("classify", "eval", held, "--checkpoint", trained, "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["unseen_labels"] == {"7": 1} and result["unknown_labels"] == 1
    assert result["examples"] == 3 and result["accuracy"] <= 2 / 3
    assert "never saw" in r.stderr


def test_predict_arguments_file_stdin_and_top(tmp_path, trained):
    r = run("classify", "predict", "good film", "bad plot", "--checkpoint", trained)
    assert r.exit_code == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [row[-1] for row in rows] == ["good film", "bad plot"]
    assert all(row[0] in ("0", "1") and 0.5 <= float(row[1]) <= 1 for row in rows)
    lines = tmp_path / "in.txt"
    lines.write_bytes("\ufeffgood film\r\n\n  bad plot  \n".encode())  # as Notepad saves it
    r = run("classify", "predict", "--file", lines, "--checkpoint", trained, "--json",
            "--top", "2")
    assert "1 empty line(s) skipped" in r.stderr
    objects = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["text"] for o in objects] == ["good film", "bad plot"]
    assert all(len(o["top"]) == 2 and o["top"][0][0] == o["label"] for o in objects)
    r = runner.invoke(app, ["classify", "predict", "--checkpoint", str(trained)],
                      input="good film\nbad plot\n")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2


def test_classify_bad_input_gets_one_line(tmp_path, trained):
    single = tmp_path / "single.txt"
    single.write_text("".join(f"1 text {i}\n" for i in range(20)))
    missing_col = tmp_path / "d.csv"
    missing_col.write_text("review,label\nx,a\ny,b\n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("".join(f"{i % 2} caf\xe9 {i}\n" for i in range(20)).encode("latin-1"))
    lm_run = trained  # a classifier is not a language model
    for args, pattern in [
        (["classify", "train", single, *TINY], "single label"),
        (["classify", "train", missing_col, *TINY], "no column 'text'"),
        (["classify", "train", latin, *TINY], "offset 5); if it is in another encoding, give "
                                             "it with --encoding"),
        (["classify", "train", tmp_path / "nope.txt", *TINY], "no such file"),
        (["classify", "train", single, "--probe", *TINY], "--probe needs --init-from"),
        (["classify", "eval", single, "--checkpoint", tmp_path], "not a charlm run"),
        (["sample", "--checkpoint", trained], "not a language model"),
        (["classify", "train", single, "--init-from", lm_run, *TINY], "not a language model"),
        (["diagnose", "gradients", "--checkpoint", trained], "measures language models"),
        (["classify", "train", single, "--cell", "irnn", "--weight-drop", "0.1", *TINY],
         "do not suit --cell irnn"),
        (["classify", "train", single, "--probe-penalty", "l1", *TINY], "only with --probe"),
        (["classify", "eval", latin, "--checkpoint", trained], "give it with --encoding"),
        (["classify", "predict", "--file", latin, "--checkpoint", trained],
         "give it with --encoding"),
    ]:
        before = sorted(tmp_path.rglob("*"))
        r = run(*args)
        assert r.exit_code == 1, (args, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and pattern in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert sorted(tmp_path.rglob("*")) == before, args  # nothing written
    r = run("classify", "train", latin, "--encoding", "latin-1", "--out", tmp_path / "l", *TINY)
    assert r.exit_code == 0, r.stderr


def test_imbalanced_classes_are_reported(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("".join(f"{'1' if i % 5 == 0 else '0'} text {i}\n" for i in range(100)))
    r = run("classify", "train", data, "--out", tmp_path / "run", *TINY, "--max-steps", "2")
    assert r.exit_code == 0, r.stderr
    assert "imbalanced (0 80%, 1 20%)" in r.stderr and "--balance" in r.stderr


# ----- from a language model: fine-tuning and the probe ------------------------------------------
@pytest.fixture
def language_model(tmp_path, small_corpus):
    r = run("train", small_corpus, "--out", tmp_path / "lm", "--preset", "tiny", "--layers", "1",
            "--hidden", "24", "--embed", "8", "--max-steps", "10", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    return tmp_path / "lm"


def test_classifier_from_a_language_model_through_the_cli(tmp_path, language_model):
    data = labelled_file(tmp_path / "data.txt")
    r = run("classify", "train", data, "--init-from", language_model, "--out",
            tmp_path / "ft", "--max-steps", "20", "--layer-lr-factor", "2.6", "--schedule",
            "slanted", "--gradual-unfreeze", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    ckpt = load_classifier(tmp_path / "ft")
    lm = load_checkpoint(language_model / "best.safetensors")
    assert ckpt.vocab.to_json() == lm.vocab.to_json()
    assert ckpt.model.config.hidden_dim == 24
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["data"]["init_from"].endswith("best.safetensors")
    r = run("classify", "train", data, "--init-from", language_model, "--hidden", "64",
            "--device", "cpu")
    assert r.exit_code == 1 and "fixes --hidden" in r.stderr


@pytest.mark.parametrize("penalty,labels", [("l2", 2), ("l1", 2), ("l1", 3)])
def test_the_probe_is_an_ordinary_classifier(tmp_path, language_model, penalty, labels):
    data = labelled_file(tmp_path / "data.txt")
    if labels == 3:  # a third label: the multinomial fit
        with data.open("a") as f:
            f.write("".join(f"2 neutral plot {i}\n" for i in range(40)))
    r = run("classify", "train", data, "--init-from", language_model, "--probe",
            "--probe-penalty", penalty, "--out", tmp_path / "probe", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "features with a non-zero weight" in r.stderr
    config = json.loads((tmp_path / "probe" / "config.json").read_text())
    choice = config["probe"]
    assert choice["penalty"] == penalty and choice["features"] == 3 * 24  # concat pooling
    assert 0 < choice["units"] <= 24
    assert choice["units"] <= choice["weighted_features"] <= 3 * choice["units"]
    # Through the command line, the backbone is the language model's, weight for weight.
    probe = load_classifier(tmp_path / "probe").model.backbone.state_dict()
    lm = load_checkpoint(language_model / "best.safetensors").model.backbone.state_dict()
    assert probe.keys() == lm.keys() and all(torch.equal(probe[k], lm[k]) for k in lm)
    # The checkpoint predicts as the regression did: its accuracy on the validation texts
    # is the probe's.
    best = [m for m in read_metrics(tmp_path / "probe") if "val_accuracy" in m][-1]
    assert best["val_accuracy"] == pytest.approx(choice["val_accuracy"])
    r = run("classify", "train", "--resume", tmp_path / "probe")
    assert r.exit_code == 1 and "probe" in r.stderr


def test_an_l1_probe_keeps_few_features_where_one_carries_the_label():
    from charlm.probe import _fit

    # 40 features of noise, one (index 7) that tells the label: the L1 fit puts weight on
    # hardly any but that one, the L2 fit on every one.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 41))
    x[:, 7] += 3.0 * (2 * y - 1)
    sparse = np.flatnonzero(_fit(x, y, 0.05, "l1", 0).coef_[0])
    dense = np.flatnonzero(_fit(x, y, 0.05, "l2", 0).coef_[0])
    assert 7 in sparse and len(sparse) <= 4
    assert len(dense) == 41


def test_a_probe_in_several_processes_is_refused_before_any_starts(tmp_path, language_model):
    data = labelled_file(tmp_path / "data.txt")
    r = run("classify", "train", data, "--init-from", language_model, "--probe", "--nproc", "2",
            "--out", tmp_path / "probe")
    assert r.exit_code == 1 and "leave out --nproc" in r.stderr
    assert not (tmp_path / "probe").exists()


def test_a_unit_counts_once_for_its_three_pooled_features():
    from charlm.probe import weighted_units

    # hidden 3, concat pooling: [last 0..2 | max 0..2 | mean 0..2]
    weighted = np.array([False, False, True, False, False, False, True, False, True])
    assert weighted_units(weighted, 3) == 2  # unit 2 (last and mean) and unit 0 (mean)
    assert weighted_units(np.zeros(9, dtype=bool), 3) == 0
    assert weighted_units(np.array([True, False, True]), 3) == 2  # last pooling


def test_language_model_goes_on_training_on_new_text(tmp_path, language_model):
    poems = tmp_path / "poems.txt"
    poems.write_text(("Shall I compare thee to a summer's day? \u00e6\n" * 300))
    import charlm
    # Set up, not yet trained: the language model's weights, and the unknown character is
    # no target (its logit is -inf: the loss would not be finite).
    trainer = charlm.build_trainer(poems, out=tmp_path / "fresh", init_from=language_model,
                                   max_steps=6, device="cpu")
    start = charlm.load(language_model).model.state_dict()
    assert same_weights(params(trainer.model), {k: v for k, v in start.items()})
    assert trainer.task.train_split.unknown > 0 and trainer.task.unknown_in_training
    total, count = trainer.task.train_loss(trainer.model, 0, 0)
    assert torch.isfinite(total)
    r = run("train", poems, "--init-from", language_model, "--out", tmp_path / "more",
            "--max-steps", "6", "--eval-every", "3", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    old, new = charlm.load(language_model), charlm.load(tmp_path / "more")
    assert new.vocab.to_json() == old.vocab.to_json()  # \u00e6 is unknown to it: UNK
    assert new.config.hidden_dim == old.config.hidden_dim
    config = json.loads((tmp_path / "more" / "config.json").read_text())
    assert config["init_from"].endswith("best.safetensors")
    r = run("train", poems, "--init-from", language_model, "--layers", "3", "--device", "cpu")
    assert r.exit_code == 1 and "fixes --layers" in r.stderr


# ----- the fine-tuning options -------------------------------------------------------------------
def test_slanted_triangular_schedule():
    cfg = TrainConfig(schedule="slanted")
    f = [lr_factor(cfg, 0, p) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
    assert f[0] == pytest.approx(1 / 32) and f[2] == pytest.approx(1.0)
    assert f[0] < f[1] < f[2] and f[2] > f[3] > f[4] and f[4] == pytest.approx(1 / 32)


def test_discriminative_rates_and_gradual_unfreezing():
    model = _model(VOCAB)  # 2 layers: groups embedding 0, layers 1-2, head 3
    cfg = TrainConfig(layer_lr_factor=2.0, gradual_unfreeze=True)
    opt = make_optimizer(model, cfg)
    scale = {g["layer"]: g["lr_scale"] for g in opt.param_groups}
    assert scale == {0: 1 / 8, 1: 1 / 4, 2: 1 / 2, 3: 1.0}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    # By the run's progress: the head alone for the first sixth, then one group more each
    # sixth, all from half-way...
    assert [unfrozen_from(cfg, model, p) for p in (0.0, 0.13, 0.25, 0.4, 0.5, 1.0)] == \
        [3, 3, 2, 1, 0, 0]
    # ...or one group more each epoch (ULMFiT), whichever comes first.
    assert [unfrozen_from(cfg, model, 0.0, e) for e in range(5)] == [3, 2, 1, 0, 0]
    assert unfrozen_from(cfg, model, 0.4, 1) == 1
    assert unfrozen_from(TrainConfig(), model, 0.0) == 0


def test_frozen_groups_do_not_move_and_lower_groups_learn_slower(tmp_path):
    data = labelled_file(tmp_path / "data.txt")
    trainer = new_classifier_run([data], None, tmp_path / "run", "tiny", {},
                                 {"max_steps": 12, "gradual_unfreeze": True,
                                  "layer_lr_factor": 2.6, "device": "cpu", "warmup_steps": 0})
    before = params(trainer.model)
    for _ in range(2):  # the first sixth of 12 steps: the head alone trains
        trainer.train_step()
    after = params(trainer.model)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("head.") for k in moved)
    rates = {g["layer"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert rates[0] == pytest.approx(rates[2] / 2.6 ** 2)
