import pytest
import torch

from charlm.errors import CharLMError
from charlm.models import LMConfig, RecurrentLM
from charlm.predictor import loss_sum

V = 11


def make(cell, device="cpu", **kw):
    torch.manual_seed(0)
    cfg = LMConfig(**{**dict(vocab_size=V, cell=cell, num_layers=2, hidden_dim=16, embed_dim=8,
                             never_predict=(0, 1)), **kw})
    return RecurrentLM(cfg).to(device).eval()


def ids(*shape, device="cpu"):
    """Random symbol ids (neither PAD nor UNK)."""
    return torch.randint(2, V, shape, device=device)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn", "leaky", "jordan"])
def test_chunked_forward_with_carried_state_equals_full_forward(cell, device):
    model = make(cell, device)
    x = ids(3, 50, device=device)
    full, full_state = model(x)
    state, pieces = None, []
    for a, b in [(0, 7), (7, 8), (8, 31), (31, 50)]:
        logits, state = model(x[:, a:b], state)
        pieces.append(logits)
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)
    for s, f in zip(state, full_state):
        assert torch.allclose(s, f, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn", "leaky", "jordan"])
@pytest.mark.parametrize("options", [dict(), dict(learn_init_state=True, dropout=0.3),
                                     dict(layer_norm=True), dict(tie_weights=True, embed_dim=16)])
def test_sampling_step_equals_the_forward_one_symbol_at_a_time(cell, options, device):
    """The stepper sampling uses (for the fused layers their kernel called directly) gives
    the forward's logits and state exactly, step after step, resets included; in training
    mode or mixed precision it is the forward itself."""
    model = make(cell, device, **options)
    x = ids(3, 12, device=device)
    with torch.no_grad(), model.inference():
        step = model.stepper()
        mine, theirs = model.initial_state(3), model.initial_state(3)
        for t in range(12):
            if t == 5:  # lane 1 starts a document
                mask = torch.tensor([False, True, False], device=device)
                mine, theirs = model.reset_state(mine, mask), model.reset_state(theirs, mask)
            got, mine = step(x[:, t], mine)
            want, theirs = model.next_logits(x[:, t:t + 1], theirs)
            assert torch.equal(got, want[:, 0])
            assert all(torch.equal(a, b) for a, b in zip(mine, theirs))
        assert torch.isinf(got[:, :2]).all()  # PAD and UNK still have no probability
        fused = cell in ("lstm", "gru", "rnn", "irnn") and not options.get("layer_norm")
        assert (model.backbone.feature_step() is not None) == fused
    model.train()
    assert model.backbone.feature_step() is None
    with model.inference(torch.bfloat16):
        assert model.backbone.feature_step() is None


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn", "leaky", "jordan"])
def test_reset_mask_equals_separate_documents(cell, device):
    model = make(cell, device)
    x = ids(2, 30, device=device)
    reset = torch.zeros(2, 30, dtype=torch.bool, device=device)
    reset[0, 10] = True
    reset[1, 4] = reset[1, 22] = True
    # Start from a non-initial state to see that resets really replace it.
    _, warm = model(ids(2, 5, device=device))
    logits, _ = model(x, warm, reset)
    lane0 = torch.cat([model(x[0:1, :10], tuple(s[:, 0:1] for s in warm))[0],
                       model(x[0:1, 10:])[0]], 1)
    lane1 = torch.cat([model(x[1:2, :4], tuple(s[:, 1:2] for s in warm))[0],
                       model(x[1:2, 4:22])[0], model(x[1:2, 22:])[0]], 1)
    assert torch.allclose(logits[0:1], lane0, atol=1e-5)
    assert torch.allclose(logits[1:2], lane1, atol=1e-5)


def test_padding_does_not_change_the_loss(device):
    model = make("lstm", device)
    x = ids(1, 20, device=device)
    y = ids(1, 20, device=device)
    base, n = loss_sum(model(x)[0], y)
    # The same lane with a PAD tail, next to a lane that is all PAD.
    xp = torch.zeros(2, 32, dtype=torch.long, device=device)
    yp = torch.zeros(2, 32, dtype=torch.long, device=device)
    xp[0, :20], yp[0, :20] = x[0], y[0]
    padded, m = loss_sum(model(xp)[0], yp)
    assert n == m == 20
    assert torch.allclose(base, padded, atol=1e-5)


def test_never_predicted_ids_get_no_probability(device):
    model = make("gru", device)
    logits, _ = model(ids(2, 5, device=device))
    probs = logits.softmax(-1)
    assert (probs[..., 0] == 0).all() and (probs[..., 1] == 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(2, 5, device=device))


def test_pad_embedding_gets_no_gradient():
    model = make("lstm")
    model.train()
    x = torch.tensor([[3, 4, 0, 0]])
    y = torch.tensor([[4, 5, 0, 0]])
    loss, _ = loss_sum(model(x)[0], y)
    loss.backward()
    assert model.backbone.embed.weight.grad[0].abs().sum() == 0


def test_tied_weights_share_one_tensor():
    model = make("lstm")
    cfg = LMConfig(vocab_size=V, hidden_dim=16, embed_dim=16, tie_weights=True)
    tied = RecurrentLM(cfg)
    assert tied.head.weight is tied.backbone.embed.weight
    assert RecurrentLM.count_parameters(cfg) == sum(p.numel() for p in tied.parameters())
    assert RecurrentLM.count_parameters(model.config) == sum(p.numel()
                                                             for p in model.parameters())


@pytest.mark.parametrize("bad", [dict(num_layers=0), dict(hidden_dim=-3), dict(cell="tcn"),
                                 dict(dropout=1.5), dict(tie_weights=True, embed_dim=8)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(CharLMError):
        LMConfig(vocab_size=V, **bad)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn", "leaky", "jordan"])
def test_bf16_compute_follows_fp32_and_trains_the_fp32_weights(cell, device):
    model = make(cell, device).train()
    x = ids(3, 40, device=device)
    reset = torch.zeros(3, 40, dtype=torch.bool, device=device)
    reset[1, 17] = True
    ref, ref_state = model(x, None, reset)
    with model.compute_in(torch.bfloat16):
        low, low_state = model(x, None, reset)
    assert low.dtype == torch.bfloat16
    assert all(s.dtype == torch.float32 for s in low_state)  # the carried state stays fp32
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(low))  # the same ids are never predicted
    assert (low.float()[finite] - ref[finite]).abs().max() < 0.05
    assert model.backbone.compute_dtype is None  # the context restores full precision
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


def test_bf16_chunked_forward_with_carried_state_equals_full_forward(device):
    model = make("lstm", device)
    x = ids(3, 50, device=device)
    with model.compute_in(torch.bfloat16):
        full, _ = model(x)
        state, pieces = None, []
        for a, b in [(0, 7), (7, 31), (31, 50)]:
            logits, state = model(x[:, a:b], state)
            pieces.append(logits)
    # The state crosses chunks as fp32, which holds a bf16 value exactly.
    assert torch.allclose(torch.cat(pieces, 1).float(), full.float(), atol=2e-2)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "leaky", "jordan"])
def test_weight_drop_drops_recurrent_weights_only_while_training(cell, device):
    torch.manual_seed(0)
    plain = make(cell, device)
    dropped = make(cell, device, weight_drop=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = ids(3, 20, device=device)
    assert torch.equal(dropped(x)[0], plain(x)[0])  # evaluation: no drop, same model
    dropped.train(), plain.train()
    torch.manual_seed(1)
    a = dropped(x)[0]
    assert not torch.allclose(a, plain(x)[0])
    # Gradients reach every recurrent matrix through the mask, zero where it dropped weights.
    loss_sum(a, x)[0].backward()
    g = dropped.backbone.rnn.weight_hh_l0.grad
    assert g is not None and bool((g == 0).any()) and bool((g != 0).any())
    # The mask also applies with bf16 compute.
    with dropped.compute_in(torch.bfloat16):
        assert dropped(x)[0].dtype == torch.bfloat16


def test_irnn_starts_at_the_identity_with_zero_biases():
    model = make("irnn")
    for name, p in model.backbone.rnn.named_parameters():
        if name.startswith("weight_hh"):
            assert torch.equal(p, torch.eye(16))
        elif name.startswith("bias"):
            assert torch.equal(p, torch.zeros_like(p))
        else:
            assert 0 < p.std() < 0.01  # small input weights
    # ReLU recurrence: with a zero input projection the identity keeps a positive state as is.
    h = torch.rand(2, 1, 16)
    with torch.no_grad():
        for name, p in model.backbone.rnn.named_parameters():
            if name.startswith("weight_ih"):
                p.zero_()
        _, (h_next,) = model(torch.tensor([[3]]), (h,))
    assert torch.allclose(h_next, h)


GRADCHECK = {"lstm": {}, "gru": {}, "rnn": {}, "irnn": {},
             "leaky": dict(cell="leaky", leak=0.3), "leaky learned": dict(cell="leaky",
                                                                          learn_leak=True),
             "lstm layer norm": dict(cell="lstm", layer_norm=True),
             "gru layer norm": dict(cell="gru", layer_norm=True),
             "rnn layer norm": dict(cell="rnn", layer_norm=True),
             "leaky layer norm": dict(cell="leaky", layer_norm=True),
             "jordan": dict(cell="jordan"), "jordan layer norm": dict(cell="jordan",
                                                                      layer_norm=True)}


@pytest.mark.parametrize("case", list(GRADCHECK))
def test_gradients_match_finite_differences_in_float64(case, device):
    """The cell's analytic gradients (wrt its weights and the carried state) agree with
    central finite differences on a tiny model in float64."""
    options = GRADCHECK[case] or dict(cell=case)
    cell = options["cell"]
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=7, num_layers=2, hidden_dim=4, embed_dim=3,
                   learn_init_state=True, never_predict=(0,), **options)
    model = RecurrentLM(cfg).double().to(device).eval()
    if cell == "irnn":  # away from its identity/zero start, so no ReLU sits within eps of its kink
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.7)
    x = torch.randint(1, 7, (2, 5), device=device)
    reset = torch.zeros(2, 5, dtype=torch.bool, device=device)
    reset[1, 2] = True  # a document start inside the chunk: the learned state enters there
    names = [n for n, _ in model.named_parameters()]
    start = tuple(torch.randn(s.shape, dtype=torch.float64, device=device).requires_grad_()
                  for s in model.initial_state(2))

    def loss(*tensors):
        params = dict(zip(names, tensors[:len(names)]))
        logits, state = torch.func.functional_call(model, params,
                                                   (x, tensors[len(names):], reset))
        return logits.log_softmax(-1)[..., 1:].sum() + sum(s.sum() for s in state)
    inputs = tuple(p.detach().clone().requires_grad_() for p in model.parameters()) + start
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's RNN backward needs train mode
        assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_learned_initial_state_is_used_at_document_starts_and_trained(cell):
    model = make(cell, learn_init_state=True)
    init_state = model.backbone.init_state
    with torch.no_grad():
        for p in init_state:
            p.uniform_(-0.5, 0.5)
    x = ids(2, 12)
    # A fresh start is the learned state, not zeros.
    zeros = tuple(torch.zeros(2, 2, 16) for _ in range(model.config.state_size))
    assert not torch.allclose(model(x)[0], model(x, zeros)[0])
    learned = tuple(p.expand(2, 2, 16) for p in init_state)
    assert torch.equal(model(x)[0], model(x, learned)[0])
    # A reset mid-chunk puts the learned state back, and the loss reaches it there.
    reset = torch.zeros(2, 12, dtype=torch.bool)
    reset[0, 6] = True
    logits, _ = model(x, zeros, reset)
    expected = model(x[0:1, 6:], tuple(s[:, 0:1] for s in learned))[0]
    assert torch.allclose(logits[0:1, 6:], expected, atol=1e-6)
    logits[0, 6:].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in init_state)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn", "leaky", "jordan"])
@pytest.mark.parametrize("options", [dict(), dict(learn_init_state=True),
                                     dict(tie_weights=True, embed_dim=16, num_layers=3),
                                     dict(layer_norm=True, recurrent_dropout=0.2)])
def test_parameter_count_is_exact(cell, options):
    """count_parameters() (used to refuse forged checkpoints before allocating) counts exactly
    the weights a checkpoint holds, without building a model of the claimed depth."""
    if cell == "irnn":
        options = {k: v for k, v in options.items() if k != "recurrent_dropout"}
    if cell == "leaky":
        options = {**options, "learn_leak": True}
    kw = dict(vocab_size=V, cell=cell, num_layers=2, hidden_dim=16, embed_dim=8,
              never_predict=(0,))
    cfg = LMConfig(**{**kw, **options})
    model = RecurrentLM(cfg)
    assert RecurrentLM.count_parameters(cfg) == sum(p.numel() for p in model.parameters())



@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
def test_the_step_loop_equals_the_fused_layer(cell):
    """With no option that needs it, the per-step LoopRNN computes what the fused torch.nn
    layer computes, from the same weights (same names, same gate layout)."""
    from charlm.models.cells import LoopRNN

    fused = make(cell).backbone.rnn
    loop = LoopRNN(cell, 8, 16, 2)
    loop.load_state_dict(fused.state_dict())
    x = torch.randn(3, 20, 8)
    start = tuple(torch.randn(2, 3, 16) for _ in range(2 if cell == "lstm" else 1))
    hx = start if cell == "lstm" else start[0]
    with torch.no_grad():
        a_out, a_state = fused(x, hx)
        b_out, b_state = loop(x, hx)
    assert torch.allclose(a_out, b_out, atol=1e-5)
    for a, b in zip(a_state if cell == "lstm" else (a_state,),
                    b_state if cell == "lstm" else (b_state,)):
        assert torch.allclose(a, b, atol=1e-5)


def test_leaky_units_integrate_with_their_leak():
    model = make("leaky", leak=0.9)
    rnn = model.backbone.rnn
    x = torch.randn(2, 1, 8)
    h = torch.randn(2, 2, 16)
    with torch.no_grad():
        out, h_next = rnn(x, h)
        w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
        new = torch.tanh(x[:, 0] @ w_ih.t() + rnn.bias_ih_l0 + h[0] @ w_hh.t() + rnn.bias_hh_l0)
    assert torch.allclose(h_next[0], 0.9 * h[0] + 0.1 * new, atol=1e-6)
    learned = make("leaky", learn_leak=True, leak=0.8).backbone.rnn
    assert torch.allclose(torch.sigmoid(learned.leak_logit_l0), torch.full((16,), 0.8))
    assert learned.leak_logit_l0.requires_grad


@pytest.mark.parametrize("cell", ["lstm", "gru", "leaky", "rnn"])
def test_recurrent_dropout_one_mask_per_chunk_and_no_memory_loss(cell, monkeypatch):
    from charlm.models.cells import LoopRNN

    model = make(cell, recurrent_dropout=0.5).train()
    calls = []
    original = LoopRNN.sample_masks

    def counted(self, batch, device, dtype):
        calls.append(batch)
        original(self, batch, device, dtype)
    monkeypatch.setattr(LoopRNN, "sample_masks", counted)
    x = torch.randint(2, V, (3, 12))
    reset = torch.zeros(3, 12, dtype=torch.bool)
    reset[1, 5] = True  # the chunk runs as two stretches: both must share one mask
    model(x, None, reset)
    assert calls == [3]
    assert model.backbone.rnn._masks is None  # cleared after the chunk
    # The masks apply while training only, and are the same at every step: with every unit
    # dropped, LSTM/GRU/leaky state still carries (no memory loss).
    rnn = model.backbone.rnn
    rnn.sample_masks(3, x.device, torch.float32)
    rnn._masks = [torch.zeros(3, 16) for _ in rnn._masks]
    e = torch.randn(3, 1, 8)  # one step; below, the first layer's state after it
    start = tuple(torch.randn(2, 3, 16) for _ in range(model.config.state_size))
    _, state = rnn(e, start if cell == "lstm" else start[0])
    h0, h1 = start[0][0], (state[0] if cell == "lstm" else state)[0]
    if cell == "lstm":  # c' = s(f) c: a zero candidate leaves a decayed copy of the old cell
        f = torch.sigmoid((e[:, 0] @ rnn.weight_ih_l0.t() + rnn.bias_ih_l0
                           + h0 @ rnn.weight_hh_l0.t() + rnn.bias_hh_l0)[:, 16:32])
        assert torch.allclose(state[1][0], f * start[1][0], atol=1e-6)
    elif cell == "gru":  # h' = z h: each unit keeps its share z of the old value
        z = torch.sigmoid((e[:, 0] @ rnn.weight_ih_l0.t() + rnn.bias_ih_l0
                           + h0 @ rnn.weight_hh_l0.t() + rnn.bias_hh_l0)[:, 16:32])
        assert torch.allclose(h1, z * h0, atol=1e-6) and h1.abs().sum() > 0
    elif cell == "leaky":  # h' = g h exactly
        assert torch.allclose(h1, rnn.leak * h0)
    else:  # Elman: the recurrent input is dropped, so h' depends on the input alone
        alone = torch.tanh(e[:, 0] @ rnn.weight_ih_l0.t() + rnn.bias_ih_l0 + rnn.bias_hh_l0)
        assert torch.allclose(h1, alone, atol=1e-6)
    rnn.clear_masks()
    model.eval()
    a = model(x)[0]
    assert torch.equal(a, model(x)[0])  # no dropout at evaluation


def test_options_for_the_wrong_cell_are_refused():
    for option in (dict(recurrent_dropout=0.1), dict(weight_drop=0.1)):
        with pytest.raises(CharLMError, match="do not suit --cell irnn"):
            LMConfig(vocab_size=V, cell="irnn", **option)
    with pytest.raises(CharLMError, match="--leak and --learn-leak apply only to --cell leaky"):
        LMConfig(vocab_size=V, cell="lstm", learn_leak=True)
    with pytest.raises(CharLMError, match="--recurrent-dropout must be in"):
        LMConfig(vocab_size=V, recurrent_dropout=1.0)
    with pytest.raises(CharLMError, match="--leak must be in"):
        LMConfig(vocab_size=V, cell="leaky", leak=1.0)


@pytest.mark.parametrize("layers", [1, 2])
def test_jordan_feeds_back_its_output_distribution(layers, device):
    torch.manual_seed(0)
    model = RecurrentLM(LMConfig(vocab_size=V, cell="jordan", num_layers=layers, hidden_dim=16,
                                 embed_dim=8, never_predict=(0, 1))).to(device).eval()
    x = ids(3, 9, device=device)
    with torch.no_grad():
        logits, (y,) = model(x)
    assert y.shape == (1, 3, V)
    # The carried state is the distribution the model predicted at the last step.
    assert torch.allclose(y[0], torch.softmax(logits[:, -1], -1), atol=1e-6)
    assert torch.equal(y[0, :, :2], torch.zeros(3, 2, device=device))  # PAD, UNK: never
    # ... and it is what the next step reads: changing it changes the next prediction.
    with torch.no_grad():
        a = model(x[:, :1], (y,))[0]
        b = model(x[:, :1], (torch.roll(y, 1, -1),))[0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("options", [dict(cell="lstm", layer_norm=True, recurrent_dropout=0.2),
                                     dict(cell="gru", layer_norm=True, learn_init_state=True),
                                     dict(cell="leaky", learn_leak=True, leak=0.95,
                                          recurrent_dropout=0.2, weight_drop=0.2),
                                     dict(cell="jordan", layer_norm=True, learn_init_state=True)],
                         ids=["lstm", "gru", "leaky", "jordan"])
def test_bf16_with_step_by_step_options(options, device):
    """The options of the step-by-step layers work under bf16 compute: the forward follows the
    float32 one, and training gradients are float32 and finite for every weight."""
    model = make(device=device, **options)
    x = ids(3, 24, device=device)
    full = model(x)[0]
    with model.compute_in(torch.bfloat16):
        half = model(x)[0]
    fin = torch.isfinite(full)
    assert (half.float()[fin] - full[fin]).abs().max() < 0.1
    model.train()
    with model.compute_in(torch.bfloat16):
        logits, state = model(x)
    loss_sum(logits, x)[0].backward()
    assert all(s.dtype == torch.float32 for s in state)
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
    if options["cell"] == "leaky":  # the leak keeps its precision: 0.95, not bf16's 0.9492
        assert model.backbone.rnn.leak_logit_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_the_written_out_backward_matches_finite_differences(cell, layer_norm, masked, device):
    """The loops' hand-written backward (cells._LSTMStretch, cells._GRUStretch), with and
    without layer norm and a recurrent-dropout mask, against float64 finite differences."""
    from charlm.models.cells import _GRUStretch, _LSTMStretch

    torch.manual_seed(0)
    b, t, h = 2, 5, 3
    norm_sizes = (4 * h, h) if cell == "lstm" else (2 * h, h)
    d = dict(dtype=torch.float64, device=device)
    if cell == "lstm":  # xp, h0, c0, w_hh
        inputs = [torch.randn(b, t, 4 * h, **d), torch.randn(b, h, **d), torch.randn(b, h, **d),
                  torch.randn(4 * h, h, **d) * 0.5]
    else:  # xp, h0, w_hh, b_hh
        inputs = [torch.randn(b, t, 3 * h, **d), torch.randn(b, h, **d),
                  torch.randn(3 * h, h, **d) * 0.5, torch.randn(3 * h, **d)]
    mask = (torch.rand(b, h, **d) > 0.4).double() / 0.6 if masked else None
    norms = [torch.rand(norm_sizes[0], **d) + 0.5, torch.randn(norm_sizes[0], **d),
             torch.rand(norm_sizes[1], **d) + 0.5, torch.randn(norm_sizes[1], **d)] \
        if layer_norm else [None] * 4
    leaves = [x.requires_grad_() for x in inputs + [n for n in norms if n is not None]]

    def run(*args):
        ns = list(args[4:]) if layer_norm else [None] * 4
        if cell == "lstm":
            out, hn, cn = _LSTMStretch.apply(*args[:4], mask, *ns)
            return out.sum() + (hn * 2).sum() + (cn * 3).sum()
        out, hn = _GRUStretch.apply(*args[:4], mask, *ns)
        return out.sum() + (hn * 2).sum()
    assert torch.autograd.gradcheck(run, tuple(leaves), eps=1e-6, atol=1e-6)
