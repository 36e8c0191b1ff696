"""The house has room: another task trains through the same loop, another kind of model is
evaluated and sampled by the same code, and options are declared once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from charlm.cli import app
from charlm.errors import CharLMError
from charlm.evaluate import EvalConfig, evaluate
from charlm.lm_runs import TRAIN_OPTIONS
from charlm.models import KINDS, LMConfig, RecurrentLM
from charlm.models.backbone import RecurrentBackbone, RecurrentConfig, count_parameters
from charlm.options import Options, check_resumable, option, positive_int
from charlm.predictor import NextSymbolModel
from charlm.sample import SampleConfig, generate
from charlm.text.corpus import PrepareConfig, text_split
from charlm.text.vocab import PAD_ID, CharVocab
from charlm.training.config import TrainConfig
from charlm.training.loop import Trainer
from charlm.training.task import Task
from charlm.training.world import World
from tests.helpers import params, read_metrics


# ----- a many-to-one task through the loop, without touching it -------------------------------
@dataclass(frozen=True)
class ToyClassifierConfig(RecurrentConfig):
    num_classes: int = option(2, "Labels.", check=positive_int)


class ToyClassifier(nn.Module):
    """The recurrent backbone, and a linear layer on the state after each text's last symbol."""

    kind = "toy-classifier"
    config_class = ToyClassifierConfig

    def __init__(self, config: ToyClassifierConfig):
        super().__init__()
        self.config = config
        self.backbone = RecurrentBackbone(config)
        self.out = nn.Linear(config.hidden_dim, config.num_classes)

    @classmethod
    def count_parameters(cls, config) -> int:
        return count_parameters(cls, config)

    @property
    def device(self):
        return self.out.weight.device

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        features, _ = self.backbone(ids)  # (B, T, H); PAD after each text's end
        last = features[torch.arange(len(ids), device=ids.device), lengths - 1]
        return self.out(last)


@dataclass(frozen=True)
class ToyTaskConfig(Options):
    section = "train"
    texts_per_batch: int = option(8, "Texts per batch.", check=positive_int)


class ToyClassificationTask(Task):
    """Is there more 'a' than 'b' in the text? Variable-length texts, padded with PAD, one
    label each, shuffled by the epoch; the validation figure is accuracy."""

    count_name = "examples"
    validation_key = "val_accuracy"
    higher_is_better = True

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        texts = ["".join(rng.choice(list("abc"), size=rng.integers(3, 15))) for _ in range(160)]
        texts = [t for t in texts if t.count("a") != t.count("b")]
        self.vocab = CharVocab("abc")
        self.ids = [self.vocab.encode(t).astype(np.int64) for t in texts]
        self.labels = np.array([int(t.count("a") > t.count("b")) for t in texts])
        self.train, self.val = np.arange(len(texts))[:-32], np.arange(len(texts))[-32:]
        self.config = ToyTaskConfig()

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train) // self.config.texts_per_batch

    def start(self, model, world):
        self.device = model.device

    def _batch(self, rows):
        lengths = torch.tensor([len(self.ids[i]) for i in rows])
        ids = torch.full((len(rows), int(lengths.max())), PAD_ID)
        for j, i in enumerate(rows):
            ids[j, :len(self.ids[i])] = torch.from_numpy(self.ids[i])
        return (ids.to(self.device), lengths.to(self.device),
                torch.from_numpy(self.labels[rows]).to(self.device))

    def train_loss(self, model, epoch, index):
        order = np.random.default_rng(epoch).permutation(self.train)
        n = self.config.texts_per_batch
        ids, lengths, labels = self._batch(order[index * n:(index + 1) * n])
        logits = model(ids, lengths)
        return nn.functional.cross_entropy(logits, labels, reduction="sum"), len(labels)

    @torch.no_grad()
    def validate(self, model, final=False, limit=None):
        was = model.training
        model.eval()
        ids, lengths, labels = self._batch(self.val)
        accuracy = float((model(ids, lengths).argmax(-1) == labels).float().mean())
        model.train(was)
        return {"val_accuracy": accuracy}


def test_a_classification_task_trains_and_resumes_through_the_same_loop(tmp_path, monkeypatch,
                                                                        device):
    monkeypatch.setitem(KINDS, ToyClassifier.kind, ToyClassifier)
    task = ToyClassificationTask()
    config = ToyClassifierConfig(vocab_size=task.vocab.size, cell="gru", num_layers=1,
                                 hidden_dim=24, embed_dim=8)
    train = TrainConfig(lr=1e-2, max_steps=120, eval_every=40, save_every=40, device=device,
                        warmup_steps=0)

    def fresh():
        torch.manual_seed(0)
        return ToyClassifier(config).to(device)
    full = Trainer(tmp_path / "full", fresh(), ToyClassificationTask(), train)
    summary = full.run()
    assert summary["best"]["val_accuracy"] >= 0.8  # chance is about 0.5
    evals = [m for m in read_metrics(tmp_path / "full") if "val_accuracy" in m]
    assert [m["step"] for m in evals] == [40, 80, 120]
    assert all("examples_per_s" in m for m in read_metrics(tmp_path / "full") if "loss" in m)

    # Interrupted after step 50 and resumed: the same weights as the run straight through.
    first = Trainer(tmp_path / "split", fresh(), ToyClassificationTask(), train)
    first.report = lambda event, data: setattr(first, "stop_requested",
                                               event == "step" and data["step"] == 50)
    assert first.run()["status"] == "interrupted"
    resumed = Trainer.resume(tmp_path / "split", lambda ckpt: ToyClassificationTask(), {})
    assert resumed.pos.step == 50 and resumed.model.kind == ToyClassifier.kind
    resumed.run()
    if device == "cpu":  # bitwise on the CPU
        a, b = params(full.model), params(resumed.model)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_classifier_backbone_starts_from_a_language_models(tmp_path):
    """The backbone's weights of a trained language model are the classifier's to start from."""
    vocab = CharVocab("abc")
    lm = RecurrentLM(LMConfig.for_vocab(vocab, cell="lstm", num_layers=2, hidden_dim=16,
                                        embed_dim=8))
    classifier = ToyClassifier(ToyClassifierConfig(vocab_size=vocab.size, cell="lstm",
                                                   num_layers=2, hidden_dim=16, embed_dim=8))
    classifier.backbone.load_state_dict(lm.backbone.state_dict())
    x = torch.from_numpy(vocab.encode("abcab").astype(np.int64))[None]
    assert torch.equal(classifier.backbone(x)[0], lm.backbone(x, readout=lm.head)[0])


# ----- a model that is not a torch module, evaluated and sampled by the same code -----------
class BigramCounts(NextSymbolModel):
    """Add-one bigram counts: the state is the previous symbol, one-hot."""

    def __init__(self, vocab: CharVocab, text: str):
        self.vocab = vocab
        ids = [vocab.eod_id] + vocab.encode(text).tolist() + [vocab.eod_id]
        counts = torch.ones(vocab.size, vocab.size, dtype=torch.float64)
        counts[:, vocab.never_predicted] = 0  # PAD, UNK: never predicted
        for a, b in zip(ids, ids[1:]):
            counts[a, b] += 1
        self.log_probs = (counts / counts.sum(-1, keepdim=True)).log()

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def device(self):
        return torch.device("cpu")

    def initial_state(self, batch_size):
        return (torch.full((1, batch_size), self.vocab.eod_id),)

    def next_logits(self, inputs, state=None, reset=None):
        return self.log_probs[inputs].float(), (inputs[:, -1:].T.contiguous(),)


def test_a_count_model_is_evaluated_and_sampled_by_the_same_code():
    text = "abba cab acab"
    vocab = CharVocab(text)
    model = BigramCounts(vocab, text)
    assert torch.allclose(model.log_probs.exp().sum(-1), torch.ones(vocab.size,
                                                                    dtype=torch.float64))
    held = "abc ba"
    result = evaluate(model, vocab, text_split(vocab, [held], None))
    ids = [vocab.eod_id] + vocab.encode(held).tolist() + [vocab.eod_id]
    by_hand = -sum(float(model.log_probs[a, b]) for a, b in zip(ids, ids[1:]))
    assert result["total_nats"] == pytest.approx(by_hand, rel=1e-6)
    assert result["bpc"] == pytest.approx(by_hand / len(held) / math.log(2), rel=1e-6)
    # Greedy sampling follows the most likely successor of each symbol.
    out = generate(model, vocab, SampleConfig(prime="a", length=5, temperature=0, seed=0))[0]
    expected, prev = "", vocab.encode("a")[0]
    for _ in range(5):
        prev = int(model.log_probs[prev].argmax())
        expected += "\n\n" if prev == vocab.eod_id else vocab.decode([prev])
    assert out == expected[:5]
    with pytest.raises(CharLMError, match="float32 only"):
        evaluate(model, vocab, text_split(vocab, [held], None), EvalConfig(precision="bf16"))


# ----- options declared once -------------------------------------------------------------------
def test_every_declared_option_is_on_the_command_line_with_its_help():
    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).stdout
    for cls in (*TRAIN_OPTIONS, PrepareConfig):
        for name, decl in cls.declared().items():
            if decl.command_line:
                assert cls.flag(name) in help_text, name
                assert decl.help.split()[0] in help_text, name
    # Values the presets set are listed per preset; the others show the declared default.
    assert "Presets: tiny 64, fast 640, default 256, large 512." in help_text
    assert f"Default: {TrainConfig.default('momentum')}." in help_text


def test_option_names_are_declared_by_one_config_each():
    """An option a user gives to `charlm train` goes to exactly one config."""
    names = [name for cls in (*TRAIN_OPTIONS, PrepareConfig)
             for name, decl in cls.declared().items() if decl.command_line]
    assert len(names) == len(set(names))
    flags = [cls.flag(name) for cls in (*TRAIN_OPTIONS, PrepareConfig)
             for name, decl in cls.declared().items() if decl.command_line]
    assert len(flags) == len(set(flags))


def test_the_resume_rule_is_read_from_the_declarations():
    saved = {"model": {"hidden_dim": 32}, "train": {"lr": 0.01}}
    check_resumable({"max_steps": 99, "device": "cpu", "hidden_dim": 32}, saved, TRAIN_OPTIONS)
    with pytest.raises(CharLMError, match="different --hidden"):
        check_resumable({"hidden_dim": 64}, saved, TRAIN_OPTIONS)
    # A field an older run did not save had its default there.
    check_resumable({"weight_drop": 0.0}, saved, TRAIN_OPTIONS)
    with pytest.raises(CharLMError, match="different --weight-drop"):
        check_resumable({"weight_drop": 0.5}, saved, TRAIN_OPTIONS)


def test_each_process_gets_a_disjoint_share_covering_every_lane():
    for size in (1, 2, 3, 7):
        shares = [World(rank, size).share(23) for rank in range(size)]
        assert sorted(np.concatenate(shares).tolist()) == list(range(23))
    with pytest.raises(CharLMError, match="cannot be shared"):
        World(0, 8).share(4)
