import pytest
import torch

from charlm.model import CharRNN, ModelConfig, loss_sum
from charlm.errors import CharLMError

V = 11


def make(cell, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, cell=cell, num_layers=2, hidden_dim=16, embed_dim=8,
                      never_predict=(0, 1), **kw)
    return CharRNN(cfg).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_chunked_forward_with_carried_state_equals_full_forward(cell):
    model = make(cell)
    x = torch.randint(2, V, (3, 50))
    full, full_state = model(x)
    state, pieces = None, []
    for a, b in [(0, 7), (7, 8), (8, 31), (31, 50)]:
        logits, state = model(x[:, a:b], state)
        pieces.append(logits)
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)
    for s, f in zip(state, full_state):
        assert torch.allclose(s, f, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_reset_mask_equals_separate_documents(cell):
    model = make(cell)
    x = torch.randint(2, V, (2, 30))
    reset = torch.zeros(2, 30, dtype=torch.bool)
    reset[0, 10] = True
    reset[1, 4] = reset[1, 22] = True
    # Start from a non-initial state to see that resets really replace it.
    _, warm = model(torch.randint(2, V, (2, 5)))
    logits, _ = model(x, warm, reset)
    lane0 = torch.cat([model(x[0:1, :10], tuple(s[:, 0:1] for s in warm))[0],
                       model(x[0:1, 10:])[0]], 1)
    lane1 = torch.cat([model(x[1:2, :4], tuple(s[:, 1:2] for s in warm))[0],
                       model(x[1:2, 4:22])[0], model(x[1:2, 22:])[0]], 1)
    assert torch.allclose(logits[0:1], lane0, atol=1e-5)
    assert torch.allclose(logits[1:2], lane1, atol=1e-5)


def test_padding_does_not_change_the_loss():
    model = make("lstm")
    x = torch.randint(2, V, (1, 20))
    y = torch.randint(2, V, (1, 20))
    base, n = loss_sum(model(x)[0], y)
    # The same lane with a PAD tail, next to a lane that is all PAD.
    xp = torch.zeros(2, 32, dtype=torch.long)
    yp = torch.zeros(2, 32, dtype=torch.long)
    xp[0, :20], yp[0, :20] = x[0], y[0]
    padded, m = loss_sum(model(xp)[0], yp)
    assert n == m == 20
    assert torch.allclose(base, padded, atol=1e-5)


def test_never_predicted_ids_get_no_probability():
    model = make("gru")
    logits, _ = model(torch.randint(2, V, (2, 5)))
    probs = logits.softmax(-1)
    assert (probs[..., 0] == 0).all() and (probs[..., 1] == 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(2, 5))


def test_pad_embedding_gets_no_gradient():
    model = make("lstm")
    model.train()
    x = torch.tensor([[3, 4, 0, 0]])
    y = torch.tensor([[4, 5, 0, 0]])
    loss, _ = loss_sum(model(x)[0], y)
    loss.backward()
    assert model.embed.weight.grad[0].abs().sum() == 0


def test_tied_weights_share_one_tensor():
    model = make("lstm")
    cfg = ModelConfig(vocab_size=V, hidden_dim=16, embed_dim=16, tie_weights=True)
    tied = CharRNN(cfg)
    assert tied.head.weight is tied.embed.weight
    assert cfg.num_parameters() == sum(p.numel() for p in tied.parameters())
    assert model.config.num_parameters() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bad", [dict(num_layers=0), dict(hidden_dim=-3), dict(cell="tcn"),
                                 dict(dropout=1.5), dict(tie_weights=True, embed_dim=8)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(CharLMError):
        ModelConfig(vocab_size=V, **bad)
