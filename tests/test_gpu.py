"""What the GPU path must do beyond the device-aware tests (`pytest --device cuda` runs those
on a GPU): runs written on a GPU continue on a CPU, bf16 autocast trains there, cuDNN's
fused layers agree with the CPU's. Skipped without CUDA."""

from __future__ import annotations

import math

import pytest
import torch

import charlm
from charlm.api import build_trainer
from tests.helpers import tiny_options

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_a_run_trained_on_the_gpu_gives_the_same_logits_on_the_cpu(tmp_path, small_corpus):
    lm = charlm.train(small_corpus, out=tmp_path / "run", **tiny_options("cuda"))
    on_cpu = charlm.load(tmp_path / "run", device="cpu")
    x = torch.randint(3, lm.vocab.size, (2, 50))
    with torch.no_grad():
        gpu, _ = lm.model.next_logits(x.cuda())
        cpu, _ = on_cpu.model.next_logits(x)
    assert torch.allclose(gpu.float().cpu(), cpu.float(), atol=1e-4)
    # and it resumes there
    r = build_trainer(resume=tmp_path / "run", device="cpu", max_steps=25)
    assert r.run()["step"] == 25


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cudnn_layers_with_carried_state_and_resets_equal_the_cpu_layers(cell):
    from charlm.models import LMConfig, RecurrentLM

    torch.manual_seed(0)
    cpu = RecurrentLM(LMConfig(vocab_size=40, cell=cell, num_layers=2, hidden_dim=64,
                               embed_dim=16)).eval()
    gpu = RecurrentLM(cpu.config).cuda().eval()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randint(3, 40, (4, 80))
    reset = torch.rand(4, 80) < 0.05
    with torch.no_grad():
        a, sa = cpu(x, None, reset)
        b, sb = gpu(x.cuda(), None, reset.cuda())
    assert torch.allclose(a, b.cpu(), atol=1e-4)
    assert all(torch.allclose(s, t.cpu(), atol=1e-5) for s, t in zip(sa, sb))


def test_bf16_autocast_trains_on_the_gpu_close_to_fp32(tmp_path, small_corpus):
    finals = {}
    for precision in ("fp32", "bf16"):
        t = build_trainer(small_corpus, out=tmp_path / precision,
                          **tiny_options("cuda", precision=precision, max_steps=40))
        losses = [t.train_step()["loss"] for _ in range(40)]
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
        finals[precision] = sum(losses[-10:]) / 10
    assert abs(finals["bf16"] - finals["fp32"]) < 0.05
