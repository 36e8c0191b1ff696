"""Recurrent layers run one time step at a time, for what the fused torch.nn layers lack.

``LoopRNN`` is a stack of layers with the interface of ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``
(batch first; state (layers, B, H), a tuple (h, c) for the LSTM; parameters named
``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` so weight drop and the
bf16 path treat both alike). The input-to-hidden products of a whole stretch are one matrix
product; only the hidden-to-hidden product and the gate arithmetic run per step.

Cells (the gate layout of each matrix follows torch.nn):

    lstm   i, f, g, o = split(W_x x + W_h h + b);  c' = s(f) c + s(i) D(tanh g);
           h' = s(o) tanh(LN_c(c'))
    gru    r, z = s(split(W_x x + W_h h + b)[:2]);  n = tanh(W_xn x + b_xn + r (W_hn h + b_hn))
           h' = (1 - z) D(n) + z h
    rnn    h' = tanh(W_x x + W_h D(h) + b)                      (Elman)
    irnn   h' = relu(W_x x + W_h D(h) + b)                      (identity start, see model)
    leaky  h' = g h + (1 - g) D(tanh(W_x x + W_h h + b))      (leaky integrator, g per unit)
    jordan see JordanRNN: the state is the previous output distribution

Options:

* layer norm (``layer_norm``, Ba, Kiros & Hinton 2016): the pre-activations are normalised
  (with a learned gain and bias) before the nonlinearity: all four LSTM gates together and the
  LSTM's cell before its tanh; the GRU's r, z together and its candidate; the Elman, IRNN and
  leaky units' one pre-activation.
* recurrent dropout (``recurrent_dropout`` P, D above, Semeniuta, Severyn & Barth 2016): while
  training, a dropout mask on the recurrent update that never erases memory: the LSTM's
  candidate g, the GRU's candidate n, the leaky unit's new value. The Elman and IRNN cells keep
  no memory apart from h, so there the mask drops the recurrent input h (as in Gal &
  Ghahramani's variational dropout). One mask per chunk, the same at every time step.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

GATES = {"lstm": 4, "gru": 3, "rnn": 1, "irnn": 1, "leaky": 1, "jordan": 1}


def layer_norm_sizes(cell: str, hidden: int) -> list[int]:
    """The widths normalised in one layer (each has a gain and a bias)."""
    return {"lstm": [4 * hidden, hidden], "gru": [2 * hidden, hidden]}.get(cell, [hidden])


class SteppedRNN(nn.Module):
    """What the step-by-step stacks share: torch.nn's uniform initialisation of their
    ``weight_*``/``bias_*`` parameters, and the recurrent-dropout masks the backbone draws once per
    chunk (``sample_masks``) and clears after it (``clear_masks``)."""

    mask_width: int  # the width of the masked recurrent quantity
    mask_count: int  # how many masks a chunk needs (one per layer, or one shared)

    def _init_uniform(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith(("weight_", "bias_")):
                    p.uniform_(-bound, bound)

    def sample_masks(self, batch: int, device, dtype) -> None:
        """Draw this chunk's recurrent-dropout masks, one per layer (training only); every
        stretch of the chunk (see RecurrentBackbone.forward) uses them, so the mask is the same at every
        step of it."""
        p = self.recurrent_dropout
        self._masks = None
        if self.training and p > 0:
            keep = 1.0 - p
            self._masks = [torch.empty(batch, self.mask_width, device=device, dtype=dtype)
                           .bernoulli_(keep).div_(keep) for _ in range(self.mask_count)]

    def clear_masks(self) -> None:
        self._masks = None


class LoopRNN(SteppedRNN):
    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int,
                 dropout: float = 0.0, layer_norm: bool = False, recurrent_dropout: float = 0.0,
                 leak: float = 0.5, learn_leak: bool = False):
        super().__init__()
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.dropout, self.layer_norm = dropout, layer_norm
        self.recurrent_dropout = recurrent_dropout
        self.learn_leak = learn_leak
        self.leak = leak
        g, h = GATES[cell], hidden_size
        for k in range(num_layers):
            inp = input_size if k == 0 else h
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(g * h, inp)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(g * h, h)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(g * h)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(g * h)))
            if layer_norm:
                for j, width in enumerate(layer_norm_sizes(cell, h)):
                    self.register_parameter(f"ln{j}_weight_l{k}", nn.Parameter(torch.ones(width)))
                    self.register_parameter(f"ln{j}_bias_l{k}", nn.Parameter(torch.zeros(width)))
            if cell == "leaky" and learn_leak:
                # g = sigmoid(leak_logit), one per unit, starting at the given leak
                logit = math.log(leak / (1 - leak))
                self.register_parameter(f"leak_logit_l{k}", nn.Parameter(torch.full((h,), logit)))
        self._init_uniform()
        self.mask_width, self.mask_count = h, num_layers
        self._masks: list[torch.Tensor] | None = None

    # ----- the forward ---------------------------------------------------------------------
    def _ln(self, x: torch.Tensor, k: int, j: int = 0) -> torch.Tensor:
        w, b = getattr(self, f"ln{j}_weight_l{k}"), getattr(self, f"ln{j}_bias_l{k}")
        return F.layer_norm(x, (x.shape[-1],), w.to(x.dtype), b.to(x.dtype))

    def forward(self, x: torch.Tensor, state=None):
        batch, steps, _ = x.shape
        h_size = self.hidden_size
        if state is None:
            z = x.new_zeros(self.num_layers, batch, h_size)
            state = (z, z.clone()) if self.cell == "lstm" else z
        hs = state[0] if self.cell == "lstm" else state
        cs = state[1] if self.cell == "lstm" else None
        new_h, new_c = [], []
        out = x
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0 and self.training:
                out = F.dropout(out, self.dropout, training=True)
            mask = self._masks[k] if self._masks is not None else None
            out, h, c = self._layer(k, out, hs[k], None if cs is None else cs[k], mask)
            new_h.append(h)
            new_c.append(c)
        h_n = torch.stack(new_h)
        if self.cell == "lstm":
            return out, (h_n, torch.stack(new_c))
        return out, h_n

    def _layer(self, k: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None,
               mask: torch.Tensor | None):
        w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
        b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
        xp = F.linear(x, w_ih, b_ih)  # (B, T, G*H): every step's input product at once
        w_hh_t = w_hh.t()
        cell, ln = self.cell, self.layer_norm
        if cell in ("lstm", "gru"):  # the backward written out (see _LSTMStretch)
            norms = [getattr(self, f"ln{j}_{w}_l{k}").to(x.dtype)
                     for j in (0, 1) for w in ("weight", "bias")] if ln else [None] * 4
            if cell == "lstm":
                return _LSTMStretch.apply(xp + b_hh, h, c, w_hh, mask, *norms)
            out, h = _GRUStretch.apply(xp, h, w_hh, b_hh, mask, *norms)
            return out, h, None
        # rnn, irnn, leaky: the recurrent bias joins the input products (one add for all steps),
        # time-major so each step's slice is contiguous; few, large operations per step.
        xs = (xp + b_hh).transpose(0, 1).contiguous()
        if cell == "leaky":
            leak = (torch.sigmoid(getattr(self, f"leak_logit_l{k}")) if self.learn_leak
                    else x.new_tensor(self.leak))
        outs = []
        for t in range(x.shape[1]):
            xt = xs[t]
            if cell == "leaky":
                pre = torch.addmm(xt, h, w_hh_t)
                new = torch.tanh(self._ln(pre, k, 0) if ln else pre)
                if mask is not None:
                    new = new * mask
                # g h + (1 - g) new, in at least float32: in bf16 a leak near 1 would round
                # to 1 and small updates of h would be lost
                wide = torch.promote_types(h.dtype, torch.float32)
                h = torch.lerp(new.to(wide), h.to(wide), leak.to(wide)).to(new.dtype)
            else:  # rnn, irnn
                pre = torch.addmm(xt, h * mask if mask is not None else h, w_hh_t)
                if ln:
                    pre = self._ln(pre, k, 0)
                h = torch.tanh(pre) if cell == "rnn" else torch.relu(pre)
            outs.append(h)
        return torch.stack(outs, 1), h, c


class JordanRNN(SteppedRNN):
    """Jordan network: the state carried from one step to the next is the model's previous
    output, the distribution over the vocab y_(t-1) = softmax(V h_(t-1) + c), not a hidden
    layer. With several layers, each reads the layer below (the first reads the input) and the
    fed-back distribution:

        h^k_t = tanh(U_k in^k_t + W_k y_(t-1) + b_k),   in^1_t = x_t, in^k_t = h^(k-1)_t
        y_t = softmax(V h^L_t + c)           (V, c: the model's output layer)

    The state is (1, B, vocab) (the PAD and UNK entries are always 0). ``set_head`` gives the
    layer the output weights before a forward (the backbone does, in the compute precision). The
    ``weight_hh_l{k}`` matrices are the feedback ones (vocab -> hidden), so weight drop and
    recurrent dropout (on y) apply to the feedback."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, vocab_size: int,
                 dropout: float = 0.0, layer_norm: bool = False, recurrent_dropout: float = 0.0):
        super().__init__()
        self.cell, self.hidden_size, self.num_layers = "jordan", hidden_size, num_layers
        self.vocab_size = vocab_size
        self.dropout, self.layer_norm = dropout, layer_norm
        self.recurrent_dropout = recurrent_dropout
        h = hidden_size
        for k in range(num_layers):
            inp = input_size if k == 0 else h
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(h, inp)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(h, vocab_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(h)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(h)))
            if layer_norm:
                self.register_parameter(f"ln0_weight_l{k}", nn.Parameter(torch.ones(h)))
                self.register_parameter(f"ln0_bias_l{k}", nn.Parameter(torch.zeros(h)))
        self._init_uniform()
        # the fed-back distribution: one mask, read by every layer
        self.mask_width, self.mask_count = vocab_size, 1
        self._head = None
        self._masks: list[torch.Tensor] | None = None

    def set_head(self, weight: torch.Tensor, bias: torch.Tensor, never: torch.Tensor) -> None:
        self._head = (weight, bias, never)

    def clear_masks(self) -> None:
        super().clear_masks()
        self._head = None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if self._head is None:
            raise RuntimeError("JordanRNN needs set_head() before a forward")
        w_out, b_out, never = self._head
        batch, steps, _ = x.shape
        y = x.new_zeros(1, batch, self.vocab_size) if y is None else y
        y = y[0]
        layers = range(self.num_layers)
        w_ih = [getattr(self, f"weight_ih_l{k}") for k in layers]
        w_hh = [getattr(self, f"weight_hh_l{k}").t() for k in layers]
        b_ih = [getattr(self, f"bias_ih_l{k}") for k in layers]
        b_hh = [getattr(self, f"bias_hh_l{k}") for k in layers]
        xp = F.linear(x, w_ih[0], b_ih[0])  # the first layer's input products, all at once
        outs = []
        for t in range(steps):
            fed = y * self._masks[0] if self._masks is not None else y
            h = None
            for k in layers:
                if k == 0:
                    inp = xp[:, t]
                else:
                    below = F.dropout(h, self.dropout, training=True) \
                        if self.dropout > 0 and self.training else h
                    inp = F.linear(below, w_ih[k], b_ih[k])
                pre = inp + torch.addmm(b_hh[k], fed, w_hh[k])
                if self.layer_norm:
                    pre = F.layer_norm(pre, (pre.shape[-1],),
                                       getattr(self, f"ln0_weight_l{k}").to(pre.dtype),
                                       getattr(self, f"ln0_bias_l{k}").to(pre.dtype))
                h = torch.tanh(pre)
            logits = F.linear(h, w_out, b_out).index_fill(-1, never, float("-inf"))
            # in at least float32 (bf16 logits), in float64 when the model is float64
            y = torch.softmax(logits, -1, dtype=torch.promote_types(logits.dtype,
                                                                    torch.float32)).to(h.dtype)
            outs.append(h)
        return torch.stack(outs, 1), y[None]


def _ln_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-5):
    """Layer norm in one call; returns the output, the input and the inverse std (the
    normalised input is rebuilt from them in the backward)."""
    out, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), w, b, eps)
    return out, (x, mean), rstd


def _ln_backward(dy: torch.Tensor, saved, rstd: torch.Tensor, w: torch.Tensor,
                 dw: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Gradient of layer norm wrt its input (``saved``, ``rstd``: what _ln_forward returned);
    adds the gain and bias gradients into ``dw`` and ``db``. For bf16 inputs CUDA keeps the
    mean and inverse std in float32: the arithmetic runs in that, the result comes back in
    the gradient's dtype."""
    x, mean = saved
    xhat = (x - mean) * rstd
    dw += (dy * xhat).sum(0)
    db += dy.sum(0)
    dxhat = dy * w
    return (rstd * (dxhat - dxhat.mean(-1, keepdim=True)
                    - xhat * (dxhat * xhat).mean(-1, keepdim=True))).to(dy.dtype)


def _keep_for_backward(ctx, saved: dict, w_hh, mask, norms) -> None:
    ctx.saved, ctx.ln, ctx.has_mask = saved, norms[0] is not None, mask is not None
    empty = w_hh.new_empty(0)
    ctx.save_for_backward(w_hh, mask if mask is not None else empty,
                          *(p if p is not None else empty for p in norms))


def _kept_for_backward(ctx):
    """w_hh, the mask (or None), the layer-norm parameters, and zeroed gradients for them
    (None without layer norm)."""
    w_hh, mask, *norms = ctx.saved_tensors
    grads = [torch.zeros_like(p) for p in norms] if ctx.ln else [None] * 4
    return w_hh, (mask if ctx.has_mask else None), norms, grads


class _LSTMStretch(torch.autograd.Function):
    """One LSTM layer over a stretch of steps, with its backward written out: the forward runs
    without autograd bookkeeping and the backward is one pass back through the steps, so a
    step costs a few plain tensor operations each way instead of a dozen autograd nodes.

    Inputs: xp (B, T, 4H) the input products with both biases, h0, c0 (B, H), w_hh (4H, H),
    mask (B, H) or None (recurrent dropout on the candidate), and the layer-norm gains and
    biases (4H and H) or None."""

    @staticmethod
    def forward(ctx, xp, h, c, w_hh, mask, g0, b0, g1, b1):
        ln = g0 is not None
        hs = h.shape[1]
        w_t = w_hh.t()
        steps = xp.shape[1]
        xs = xp.transpose(0, 1).contiguous()  # time-major: each step's slice is contiguous
        saved = {k: [] for k in ("h", "c", "s", "g", "tc", "x0", "r0", "x1", "r1")}
        outs = []
        for t in range(steps):
            saved["h"].append(h)
            saved["c"].append(c)
            pre = torch.addmm(xs[t], h, w_t)
            if ln:
                pre, x0, r0 = _ln_forward(pre, g0, b0)
                saved["x0"].append(x0)
                saved["r0"].append(r0)
            s = torch.sigmoid(pre)
            g = torch.tanh(pre[:, 2 * hs:3 * hs])
            gm = g * mask if mask is not None else g
            c = torch.addcmul(s[:, hs:2 * hs] * c, s[:, :hs], gm)
            cl = c
            if ln:
                cl, x1, r1 = _ln_forward(c, g1, b1)
                saved["x1"].append(x1)
                saved["r1"].append(r1)
            tc = torch.tanh(cl)
            h = s[:, 3 * hs:] * tc
            saved["s"].append(s)
            saved["g"].append(g)
            saved["tc"].append(tc)
            outs.append(h)
        _keep_for_backward(ctx, saved, w_hh, mask, (g0, b0, g1, b1))
        return torch.stack(outs, 1), h, c

    @staticmethod
    def backward(ctx, dout, dh, dc):
        w_hh, mask, (g0, b0, g1, b1), (dg0, db0, dg1, db1) = _kept_for_backward(ctx)
        sv, ln = ctx.saved, ctx.ln
        steps = len(sv["s"])
        hs = w_hh.shape[1]
        dh = torch.zeros_like(sv["h"][0]) if dh is None else dh
        dc = torch.zeros_like(sv["c"][0]) if dc is None else dc
        dpres = [None] * steps
        for t in reversed(range(steps)):
            s, g, tc = sv["s"][t], sv["g"][t], sv["tc"][t]
            si, sf, so = s[:, :hs], s[:, hs:2 * hs], s[:, 3 * hs:]
            dht = dh if dout is None else dh + dout[:, t]
            dcl = dht * so * (1 - tc * tc)
            if ln:
                dcl = _ln_backward(dcl, sv["x1"][t], sv["r1"][t], g1, dg1, db1)
            dct = dc + dcl
            gm = g * mask if mask is not None else g
            ds = torch.empty_like(s)
            ds[:, :hs] = dct * gm
            ds[:, hs:2 * hs] = dct * sv["c"][t]
            ds[:, 3 * hs:] = dht * tc
            dpre = ds * s * (1 - s)
            dgm = dct * si
            dpre[:, 2 * hs:3 * hs] = (dgm * mask if mask is not None else dgm) * (1 - g * g)
            if ln:
                dpre = _ln_backward(dpre, sv["x0"][t], sv["r0"][t], g0, dg0, db0)
            dpres[t] = dpre
            dh = dpre @ w_hh
            dc = dct * sf
        dxp = torch.stack(dpres, 1)
        dw = dxp.flatten(0, 1).t() @ torch.stack(sv["h"], 1).flatten(0, 1)
        return dxp, dh, dc, dw, None, dg0, db0, dg1, db1


class _GRUStretch(torch.autograd.Function):
    """One GRU layer over a stretch, backward written out as for _LSTMStretch.

    Inputs: xp (B, T, 3H) the input products with the input bias, h0 (B, H), w_hh (3H, H),
    b_hh (3H), mask (B, H) or None (recurrent dropout on the candidate n), and the layer-norm
    gains and biases (2H for r and z, H for the candidate) or None."""

    @staticmethod
    def forward(ctx, xp, h, w_hh, b_hh, mask, g0, b0, g1, b1):
        ln = g0 is not None
        hs = h.shape[1]
        w_t = w_hh.t()
        xs = xp.transpose(0, 1).contiguous()
        saved = {k: [] for k in ("h", "hp", "rz", "n", "x0", "r0", "x1", "r1")}
        outs = []
        for t in range(xp.shape[1]):
            xt = xs[t]
            saved["h"].append(h)
            hp = torch.addmm(b_hh, h, w_t)
            rz = xt[:, :2 * hs] + hp[:, :2 * hs]
            if ln:
                rz, x0, r0 = _ln_forward(rz, g0, b0)
                saved["x0"].append(x0)
                saved["r0"].append(r0)
            rz = torch.sigmoid(rz)
            n = torch.addcmul(xt[:, 2 * hs:], rz[:, :hs], hp[:, 2 * hs:])
            if ln:
                n, x1, r1 = _ln_forward(n, g1, b1)
                saved["x1"].append(x1)
                saved["r1"].append(r1)
            n = torch.tanh(n)
            h = torch.lerp(n * mask if mask is not None else n, h, rz[:, hs:])
            saved["hp"].append(hp)
            saved["rz"].append(rz)
            saved["n"].append(n)
            outs.append(h)
        _keep_for_backward(ctx, saved, w_hh, mask, (g0, b0, g1, b1))
        return torch.stack(outs, 1), h

    @staticmethod
    def backward(ctx, dout, dh):
        w_hh, mask, (g0, b0, g1, b1), (dg0, db0, dg1, db1) = _kept_for_backward(ctx)
        sv, ln = ctx.saved, ctx.ln
        steps = len(sv["n"])
        hs = w_hh.shape[1]
        dh = torch.zeros_like(sv["h"][0]) if dh is None else dh
        dxs, dhps = [None] * steps, [None] * steps
        for t in reversed(range(steps)):
            hp, rz, n, h_prev = sv["hp"][t], sv["rz"][t], sv["n"][t], sv["h"][t]
            r, z = rz[:, :hs], rz[:, hs:]
            dht = dh if dout is None else dh + dout[:, t]
            nm = n * mask if mask is not None else n
            dn = dht * (1 - z)
            if mask is not None:
                dn = dn * mask
            dn_pre = dn * (1 - n * n)
            if ln:
                dn_pre = _ln_backward(dn_pre, sv["x1"][t], sv["r1"][t], g1, dg1, db1)
            drz = torch.empty_like(rz)
            drz[:, :hs] = dn_pre * hp[:, 2 * hs:]
            drz[:, hs:] = dht * (h_prev - nm)
            drz = drz * rz * (1 - rz)
            if ln:
                drz = _ln_backward(drz, sv["x0"][t], sv["r0"][t], g0, dg0, db0)
            dhp = torch.cat([drz, dn_pre * r], 1)
            dxs[t] = torch.cat([drz, dn_pre], 1)
            dhps[t] = dhp
            dh = torch.addmm(dht * z, dhp, w_hh)
        dhp_all = torch.stack(dhps, 1).flatten(0, 1)
        dw = dhp_all.t() @ torch.stack(sv["h"], 1).flatten(0, 1)
        return (torch.stack(dxs, 1), dh, dw, dhp_all.sum(0), None, dg0, db0, dg1, db1)
