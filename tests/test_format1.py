"""Run directories written by charlm before the house was rebuilt (checkpoint format 1) keep
loading, sampling the same text, evaluating to the same figures and resuming to the same
losses. The runs and the figures in expected.json were written by that earlier code (see
fixtures/make_format1_runs.py)."""

import json
import shutil

import pytest
import torch

import charlm
from charlm.api import build_trainer
from charlm.checkpoint import FORMAT_VERSION, load_checkpoint
from tests.helpers import FIXTURES, read_metrics

HERE = FIXTURES / "format1"
EXPECTED = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))
RUNS = list(EXPECTED["runs"])


@pytest.mark.parametrize("name", RUNS)
def test_a_format1_run_loads_and_samples_the_same_text(name):
    lm = charlm.load(HERE / name)
    assert lm.checkpoint.version == 1 and lm.checkpoint.kind == "rnn-lm"
    for spec in EXPECTED["runs"][name]["samples"]:
        options = {k: v for k, v in spec.items() if k != "text"}
        assert lm.sample(**options) == spec["text"], options


@pytest.mark.parametrize("name", RUNS)
def test_a_format1_run_evaluates_to_the_same_figures(name):
    result = charlm.load(HERE / name).evaluate(EXPECTED["held_out"])
    for key, value in EXPECTED["runs"][name]["eval"].items():
        assert result[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("name", RUNS)
def test_a_format1_run_resumes_to_the_same_losses(name, tmp_path):
    run = tmp_path / name
    shutil.copytree(HERE / name, run)
    before = {p.name: p.read_bytes() for p in (HERE / name).iterdir()}
    expected = EXPECTED["runs"][name]["resumed"]
    first = EXPECTED["runs"][name]["options"]["max_steps"]
    trainer = build_trainer(HERE / "corpus.txt", resume=run, max_steps=expected["max_steps"])
    assert trainer.pos.step == first
    # Saved before validation on a sample existed: it goes on scoring the whole split, so its
    # best figure is compared with like figures.
    assert trainer.task.config.val_sample == 0
    trainer.run()
    records = [m for m in read_metrics(run) if m["step"] > first]
    assert [m["loss"] for m in records if "loss" in m] == pytest.approx(expected["losses"],
                                                                         rel=1e-5)
    assert [m["val_loss"] for m in records if "val_loss" in m] == pytest.approx(
        expected["val_losses"], rel=1e-5)
    # The fixture itself is untouched; the resumed run now writes the current format.
    assert {p.name: p.read_bytes() for p in (HERE / name).iterdir()} == before
    assert load_checkpoint(run / "last.safetensors").version == FORMAT_VERSION


@pytest.mark.parametrize("name", RUNS)
def test_the_backbone_of_a_format1_model_is_what_the_file_holds(name):
    """What a classifier will copy from a trained language model, its backbone, comes out of
    a version-1 file whose names (embed.*, rnn.*, init_state.*) predate the backbone."""
    from safetensors import safe_open

    with safe_open(str(HERE / name / "best.safetensors"), framework="pt") as f:
        stored = {k[len("model/"):]: f.get_tensor(k) for k in f.keys() if k.startswith("model/")}
    model = charlm.load(HERE / name).model
    backbone, head = model.backbone.state_dict(), model.head.state_dict()
    assert set(stored) == set(backbone) | {f"head.{k}" for k in head}
    assert all(torch.equal(v, stored[k]) for k, v in backbone.items())
    assert all(torch.equal(v, stored[f"head.{k}"]) for k, v in head.items())
