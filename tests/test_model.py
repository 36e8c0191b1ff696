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


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
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


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
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


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
def test_bf16_compute_follows_fp32_and_trains_the_fp32_weights(cell):
    model = make(cell).train()
    x = torch.randint(2, V, (3, 40))
    reset = torch.zeros(3, 40, dtype=torch.bool)
    reset[1, 17] = True
    ref, ref_state = model(x, None, reset)
    with model.compute_in(torch.bfloat16):
        low, low_state = model(x, None, reset)
    assert low.dtype == torch.bfloat16
    assert all(s.dtype == torch.float32 for s in low_state)  # the carried state stays fp32
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(low))  # the same ids are never predicted
    assert (low.float()[finite] - ref[finite]).abs().max() < 0.05
    assert model.compute_dtype is None  # the context restores full precision
    # Gradients reach the float32 weights through the casts and agree with fp32's in direction.
    loss_low = loss_sum(low, x)[0]
    grads_low = torch.autograd.grad(loss_low, list(model.parameters()), allow_unused=True)
    grads_ref = torch.autograd.grad(loss_sum(ref, x)[0], list(model.parameters()),
                                    allow_unused=True)
    for (name, p), gl, gr in zip(model.named_parameters(), grads_low, grads_ref):
        if gr is None:
            continue
        assert gl.dtype == torch.float32, name
        cos = torch.nn.functional.cosine_similarity(gl.flatten(), gr.flatten(), dim=0)
        assert cos > 0.98, (name, float(cos))


def test_bf16_chunked_forward_with_carried_state_equals_full_forward():
    model = make("lstm")
    x = torch.randint(2, V, (3, 50))
    with model.compute_in(torch.bfloat16):
        full, _ = model(x)
        state, pieces = None, []
        for a, b in [(0, 7), (7, 31), (31, 50)]:
            logits, state = model(x[:, a:b], state)
            pieces.append(logits)
    # The state crosses chunks as fp32, which holds a bf16 value exactly.
    assert torch.allclose(torch.cat(pieces, 1).float(), full.float(), atol=2e-2)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
def test_weight_drop_drops_recurrent_weights_only_while_training(cell):
    torch.manual_seed(0)
    plain = make(cell)
    dropped = make(cell, weight_drop=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randint(2, V, (3, 20))
    assert torch.equal(dropped(x)[0], plain(x)[0])  # evaluation: no drop, same model
    dropped.train(), plain.train()
    torch.manual_seed(1)
    a = dropped(x)[0]
    assert not torch.allclose(a, plain(x)[0])
    # Gradients reach every recurrent matrix through the mask, zero where it dropped weights.
    loss_sum(a, x)[0].backward()
    g = dropped.rnn.weight_hh_l0.grad
    assert g is not None and bool((g == 0).any()) and bool((g != 0).any())
    # The mask also applies with bf16 compute.
    with dropped.compute_in(torch.bfloat16):
        assert dropped(x)[0].dtype == torch.bfloat16


def test_irnn_starts_at_the_identity_with_zero_biases():
    model = make("irnn")
    for name, p in model.rnn.named_parameters():
        if name.startswith("weight_hh"):
            assert torch.equal(p, torch.eye(16))
        elif name.startswith("bias"):
            assert torch.equal(p, torch.zeros_like(p))
        else:
            assert 0 < p.std() < 0.01  # small input weights
    # ReLU recurrence: with a zero input projection the identity keeps a positive state as is.
    h = torch.rand(2, 1, 16)
    with torch.no_grad():
        for name, p in model.rnn.named_parameters():
            if name.startswith("weight_ih"):
                p.zero_()
        _, (h_next,) = model(torch.tensor([[3]]), (h,))
    assert torch.allclose(h_next, h)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
def test_gradients_match_finite_differences_in_float64(cell):
    """The cell's analytic gradients (wrt its weights and the carried state) agree with
    central finite differences on a tiny model in float64."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=7, cell=cell, num_layers=2, hidden_dim=4, embed_dim=3,
                      learn_init_state=True, never_predict=(0,))
    model = CharRNN(cfg).double().eval()
    if cell == "irnn":  # away from its identity/zero start, so no ReLU sits within eps of its kink
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.7)
    x = torch.randint(1, 7, (2, 5))
    reset = torch.zeros(2, 5, dtype=torch.bool)
    reset[1, 2] = True  # a document start inside the chunk: the learned state enters there
    names = [n for n, _ in model.named_parameters()]
    start = tuple(torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
                  for _ in range(model.state_size))

    def loss(*tensors):
        params = dict(zip(names, tensors[:len(names)]))
        logits, state = torch.func.functional_call(model, params,
                                                   (x, tensors[len(names):], reset))
        return logits.log_softmax(-1)[..., 1:].sum() + sum(s.sum() for s in state)
    inputs = tuple(p.detach().clone().requires_grad_() for p in model.parameters()) + start
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_learned_initial_state_is_used_at_document_starts_and_trained(cell):
    model = make(cell, learn_init_state=True)
    with torch.no_grad():
        for p in model.init_state:
            p.uniform_(-0.5, 0.5)
    x = torch.randint(2, V, (2, 12))
    # A fresh start is the learned state, not zeros.
    zeros = tuple(torch.zeros(2, 2, 16) for _ in range(model.state_size))
    assert not torch.allclose(model(x)[0], model(x, zeros)[0])
    learned = tuple(p.expand(2, 2, 16) for p in model.init_state)
    assert torch.equal(model(x)[0], model(x, learned)[0])
    # A reset mid-chunk puts the learned state back, and the loss reaches it there.
    reset = torch.zeros(2, 12, dtype=torch.bool)
    reset[0, 6] = True
    logits, _ = model(x, zeros, reset)
    expected = model(x[0:1, 6:], tuple(s[:, 0:1] for s in learned))[0]
    assert torch.allclose(logits[0:1, 6:], expected, atol=1e-6)
    logits[0, 6:].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.init_state)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
@pytest.mark.parametrize("options", [dict(), dict(learn_init_state=True),
                                     dict(tie_weights=True, embed_dim=16, num_layers=3)])
def test_parameter_count_is_exact(cell, options):
    """num_parameters() (used to refuse forged checkpoints before allocating) counts exactly
    the weights a checkpoint holds."""
    kw = dict(vocab_size=V, cell=cell, num_layers=2, hidden_dim=16, embed_dim=8,
              never_predict=(0,))
    cfg = ModelConfig(**{**kw, **options})
    model = CharRNN(cfg)
    assert cfg.num_parameters() == sum(p.numel() for p in model.parameters())
