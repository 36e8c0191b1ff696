import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlm.cli import app
from charlm.diagnose import WARM_UP, DiagnoseConfig, _windows, gradient_profile
from charlm.models import LMConfig, RecurrentLM
from charlm.text.vocab import CharVocab

runner = CliRunner()


def fresh(cell, vocab, device="cpu", **kw):
    torch.manual_seed(1)
    return RecurrentLM(LMConfig(vocab_size=vocab.size, cell=cell, num_layers=2, hidden_dim=12,
                                embed_dim=6, never_predict=(0,), **kw)).to(device)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "irnn", "leaky", "jordan"])
def test_profile_equals_the_gradient_through_a_fused_forward(cell, small_text, device):
    """The step-by-step measurement equals differentiating the loss of the window's last step
    through one fused forward over the last k steps, from the state k steps back."""
    vocab = CharVocab(small_text)
    tokens = vocab.encode(small_text)
    model = fresh(cell, vocab, device).eval()
    max_k = 9
    profile = gradient_profile(model, tokens, DiagnoseConfig(max_k=max_k, windows=1,
                                                             exploding_windows=0, seed=4))
    (start,) = _windows(tokens, 1, max_k + 1, 4, (0,))
    seq = torch.from_numpy(tokens[start - WARM_UP:start + max_k + 1].astype(np.int64))[None]
    seq = seq.to(device)
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's RNN backward needs train mode
        for k in (1, 2, 5, 9):
            with torch.no_grad():
                _, state = model(seq[:, :WARM_UP + max_k - k])
            leaf = tuple(s.clone().requires_grad_() for s in state)
            logits, _ = model(seq[:, WARM_UP + max_k - k:WARM_UP + max_k], leaf)
            loss = torch.nn.functional.cross_entropy(logits[:, -1], seq[:, WARM_UP + max_k])
            grads = torch.autograd.grad(loss, leaf)
            direct = float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads)))
            assert profile["mean"][k - 1] == pytest.approx(direct, rel=1e-4), k
    assert profile["k"] == list(range(1, max_k + 1))


def test_a_contractive_elman_rnn_forgets_geometrically(small_text):
    vocab = CharVocab(small_text)
    model = fresh("rnn", vocab)
    with torch.no_grad():
        for name, p in model.backbone.rnn.named_parameters():
            if name.startswith("weight_hh"):
                p.mul_(0.5)
    profile = gradient_profile(model, vocab.encode(small_text),
                               DiagnoseConfig(max_k=30, windows=16, exploding_windows=4))
    mean = profile["mean"]
    assert all(b < a for a, b in zip(mean, mean[1:]))  # strictly falling with k
    assert mean[-1] < 1e-6 * mean[0]
    assert len(profile["weight_grad_norms"]) == 4 and profile["weight_grad_max"] > 0


def test_cli_writes_table_json_and_plot_and_never_overwrites(tmp_path, small_corpus):
    args = ["diagnose", "gradients", str(small_corpus), "--cell", "rnn,lstm", "--hidden", "16",
            "--max-k", "12", "--windows", "8"]
    r = runner.invoke(app, args + ["--plot", str(tmp_path / "g.png"), "--json"])
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data["models"]) == {"rnn 1x16 (fresh)", "lstm 1x16 (fresh)"}
    for prof in data["models"].values():
        assert prof["k"] == list(range(1, 13)) and all(m > 0 for m in prof["mean"])
    png = (tmp_path / "g.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    again = runner.invoke(app, args + ["--plot", str(tmp_path / "g.png")])
    assert again.exit_code == 1 and "exists" in again.stderr
    assert (tmp_path / "g.png").read_bytes() == png
    for name in ("gradients.png", "gradients-2.png"):  # the default name is numbered if taken
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "mean ||dL_t / ds_(t-k)||" in r.stdout
        assert (tmp_path / name).exists()


def test_cli_measures_a_trained_checkpoint(tmp_path, small_corpus):
    r = runner.invoke(app, ["train", str(small_corpus), "--out", str(tmp_path / "run"),
                            "--preset", "tiny", "--max-steps", "5", "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["diagnose", "gradients", str(small_corpus), "--checkpoint",
                            str(tmp_path / "run"), "--max-k", "8", "--windows", "4", "--json"])
    assert r.exit_code == 0, r.stderr
    assert list(json.loads(r.stdout)["models"]) == [str(tmp_path / "run")]


@pytest.mark.parametrize("args, message", [
    (["--cell", "tcn"], "--cell must be among"),
    (["--max-k", "0"], "--max-k must be >= 1"),
    (["--hidden", "-4"], "--hidden must be >= 1"),
    (["--max-k", "50000"], "too short for the diagnostic"),
])
def test_cli_bad_input(tmp_path, small_corpus, args, message):
    r = runner.invoke(app, ["diagnose", "gradients", str(small_corpus), *args])
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr
    assert not list(tmp_path.glob("*.png"))
