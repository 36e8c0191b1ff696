"""A discrete hidden Markov model as a language model: S hidden states, each emitting symbols.

    z_1 ~ start,  z_t ~ trans[z_{t-1}, :],  x_t ~ emit[z_t, :]        (one chain per document)

It is a ``NextSymbolModel`` (see ``charlm.predictor``): the carried state is the belief about
the hidden state that will emit the NEXT symbol, log P(z_next | what was read), (1, B, S).
Reading an input x updates the belief by Bayes (the filtering recursion of the forward
algorithm) and moves it one step along the transitions:

    posterior(s) ∝ belief(s) emit[s, x]          belief'(j) = Σ_s posterior(s) trans[s, j]
    logits = log Σ_s belief'(s) emit[s, :]       = log P(next symbol | the inputs so far)

Documents follow the corpus's rule (see ``text.corpus``): an EOD input starts a document. It is
not emitted by anything (as a target, the EOD that ends a document is emitted by that document's
last state); it only resets the belief to the start distribution. So does any input where the
``reset`` mask is true (a lane that starts inside a document): that input is not read either.

An input no state can emit (PAD, UNK and the other never-predicted ids: their emission column is
-inf everywhere) carries no information: the posterior is the belief itself, as if the symbol
were missing, and the chain still takes its step.

Everything runs in log space. The sums over states are max-shifted matrix products,
log Σ_s exp(a_s) M[s, j] = m + log Σ_s exp(a_s - m) M[s, j], with each column of M scaled by
its largest entry (added back after the log), and weights below e^-60 of the largest floored
there (``floored_exp``): exact up to float32 rounding as long as no probability that matters
is below float32's range (~1e-38) relative to the largest, which the smoothed counts of EM never
come near. The parameters are persistent buffers (log-probabilities,
float32), so checkpoints keep them; ``charlm.training.em`` trains them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..errors import CharLMError
from ..options import Options, option, positive_int
from ..predictor import NextSymbolModel, State
from ..text.vocab import PAD_ID, Vocab

MIN_STATES, MAX_STATES = 2, 4096
# Shifted log-weights are floored at -EXP_FLOOR before exp: e^-60 ~ 1e-26 changes no float32
# sum it joins, and its products with the tables stay normal numbers (subnormal floats make the
# CPU's exp, log and matrix products several times slower).
EXP_FLOOR = 60.0
OWNED = 0.95  # of a state's initial emissions, on the symbols it starts out owning


def floored_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) of log-weights shifted so that the largest is about 0, floored at
    e^-EXP_FLOOR."""
    return x.clamp_min(-EXP_FLOOR).exp_()


def _states(flag: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CharLMError(f"{flag} must be an integer, got {value!r}")
    if value < MIN_STATES:
        raise CharLMError(f"{flag} must be at least {MIN_STATES}, got {value}")
    if value > MAX_STATES:
        raise CharLMError(f"{flag} must be at most {MAX_STATES}, got {value}")


@dataclass(frozen=True)
class HMMConfig(Options):
    """The hidden Markov model's options (saved in a run's config.json under "model")."""

    section = "model"

    vocab_size: int = option(help="Symbols in the vocab.", check=positive_int,
                             command_line=False)
    states: int = option(64, "Hidden states of the HMM (it can carry at most log2(states) bits "
                             "about the past).", check=_states)
    never_predict: tuple[int, ...] = option((PAD_ID,), "Ids the model never emits (PAD, UNK).",
                                            command_line=False)
    eod_id: int | None = option(
        None, "The id that starts a document: an input equal to it resets the belief to the "
              "start distribution even where no reset mask says so (sampling feeds EOD alone).",
        command_line=False)

    def check(self) -> None:
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.vocab_size
               for i in self.never_predict):
            raise CharLMError("never_predict ids must lie inside the vocab")
        if len(set(self.never_predict)) >= self.vocab_size:
            raise CharLMError("the HMM needs a symbol it may emit: every id is never_predict")
        if self.eod_id is not None and (not 0 <= self.eod_id < self.vocab_size
                                        or self.eod_id in self.never_predict):
            raise CharLMError("the EOD id must lie inside the vocab and be predicted")

    @classmethod
    def for_vocab(cls, vocab: Vocab, **options) -> HMMConfig:
        """The config of a model of ``vocab``: its size, its EOD, and no probability for its PAD
        and UNK."""
        return cls(vocab_size=vocab.size, never_predict=vocab.never_predicted,
                   eod_id=vocab.eod_id, **options)


class HMMTables(NamedTuple):
    """The parameters as the recursions use them (see ``HiddenMarkovLM.tables``)."""

    trans_cols: torch.Tensor  # (S, S) exp(log_trans - col_max): for sums over from-states
    col_max: torch.Tensor     # (S,)
    trans_rows: torch.Tensor  # (S, S) exp(log_trans - row_max): for sums over to-states
    row_max: torch.Tensor     # (S, 1)
    emit_cols: torch.Tensor   # (S, V) exp(log_emit - emit_max), 0 in never-emitted columns
    emit_max: torch.Tensor    # (V,), 0 in never-emitted columns
    reads: torch.Tensor       # (V, S) log emit[s, x] per input x; 0 where x is never emitted
    silent: torch.Tensor      # (V,) bool: ids no state emits (uninformative as inputs)


def _shifted(log_m: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(log_m - max along dim) and that max (0 where a whole line is -inf)."""
    top = log_m.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return (log_m - top).exp(), top


class HiddenMarkovLM(nn.Module, NextSymbolModel):
    """A discrete HMM over the vocab's symbols (see the module doc)."""

    kind = "hmm-lm"
    config_class = HMMConfig

    def __init__(self, config: HMMConfig):
        super().__init__()
        self.config = c = config
        s, v = c.states, c.vocab_size
        # Uniform to start (``initialise`` draws random parameters; EM needs them to differ).
        emit = torch.full((s, v), -math.log(v - len(set(c.never_predict))))
        emit[:, list(c.never_predict)] = -math.inf
        self.register_buffer("log_start", torch.full((s,), -math.log(s)))
        self.register_buffer("log_trans", torch.full((s, s), -math.log(s)))  # row: from-state
        self.register_buffer("log_emit", emit)
        self._cache: tuple | None = None

    @classmethod
    def count_parameters(cls, config: HMMConfig) -> int:
        s, v = config.states, config.vocab_size
        return s + s * s + s * v

    @torch.no_grad()
    def initialise(self, generator: torch.Generator, unigram: torch.Tensor) -> None:
        """Parameters to start EM from, drawn from ``generator`` (a CPU generator, so every
        device gets the same): start and each row of the transitions Dirichlet(1) draws
        (independent Exp(1) weights, normalised). Each state starts out owning symbols: the
        emitted symbols by frequency (``unigram`` (V,): weights, e.g. the training text's symbol
        counts), the one of rank r to the states s with r mod S = s mod V' (V' symbols emitted:
        with fewer states than symbols each owns several, with more each symbol has several
        owners). A state's emissions put OWNED of their mass on its symbols (each times a factor
        from U(0.5, 1.5)) and the rest on the unigram (each entry times an Exp(1) factor). States that start out nearly alike sit near a
        saddle of the likelihood (every state the unigram) that EM leaves only after many passes
        (on Tiny Shakespeare: ~8 at 64 states, more at 256); states that start as distinct as the
        symbols make the first pass's chain a bigram, and EM goes on from there."""
        s, v = self.config.states, self.config.vocab_size

        def exp1(*shape):
            uniform = torch.rand(*shape, generator=generator, dtype=torch.float64)
            return (-torch.log1p(-uniform)).clamp_min(1e-12)  # Exp(1), never zero
        weights = unigram.detach().to("cpu", torch.float64).clamp_min(0)
        weights = weights / max(float(weights.sum()), 1e-300) + 1.0 / v  # no symbol at zero
        weights[list(self.config.never_predict)] = 0
        emitted = torch.nonzero(weights > 0)[:, 0]
        by_rank = emitted[torch.argsort(-weights[emitted], stable=True)]
        rank = torch.arange(len(by_rank))
        owns = torch.zeros(s, v, dtype=torch.float64)
        owns[:, by_rank] = ((rank[None, :] % s) == (torch.arange(s)[:, None] % len(by_rank))
                            ).double()
        mine = owns * (0.5 + torch.rand(s, v, generator=generator, dtype=torch.float64))
        rest = weights[None, :] * exp1(s, v)
        emit = OWNED * mine / mine.sum(-1, keepdim=True) + \
            (1 - OWNED) * rest / rest.sum(-1, keepdim=True)
        self.set_probabilities(start=exp1(s), trans=exp1(s, s), emit=emit)

    @torch.no_grad()
    def set_probabilities(self, start: torch.Tensor, trans: torch.Tensor,
                          emit: torch.Tensor) -> None:
        """Set the parameters from non-negative weights (each row normalised here; the
        never-predicted columns of ``emit`` are set to zero)."""
        emit = emit.to(torch.float64).clone()
        emit[:, list(self.config.never_predict)] = 0
        for buffer, weights in ((self.log_start, start), (self.log_trans, trans),
                                (self.log_emit, emit)):
            w = weights.to(torch.float64)
            buffer.copy_((w / w.sum(-1, keepdim=True)).log())

    # ----- NextSymbolModel ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.log_start.device

    def initial_state(self, batch_size: int) -> State:
        """Nothing read: the next symbol's state follows the start distribution."""
        return (self.log_start.expand(1, batch_size, -1).clone(),)

    def next_logits(self, inputs: torch.Tensor, state: State | None = None,
                    reset: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """inputs (B, T) ids -> logits (B, T, V), log P(x_{t+1} | x_<=t), and the belief after
        the last input, (1, B, S)."""
        prior = None if state is None else state[0][0]
        beliefs = self.beliefs(inputs, reset, prior)
        return self.logits_of(beliefs), (beliefs[:, -1][None],)

    forward = next_logits

    # ----- the recursions ----------------------------------------------------------------------
    def tables(self) -> HMMTables:
        """The parameters in the forms the recursions use, computed once per change of the
        buffers (in place, by ``load_state_dict`` or EM, or moved: each changes the key;
        tensors made under ``torch.inference_mode`` keep no version, so are never cached)."""
        buffers = (self.log_start, self.log_trans, self.log_emit)
        if any(b.is_inference() for b in buffers):
            return self._build_tables()
        key = tuple((b.data_ptr(), b._version, b.device) for b in buffers)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build_tables())
        return self._cache[1]

    def _build_tables(self) -> HMMTables:
        trans_cols, col_max = _shifted(self.log_trans, 0)
        trans_rows, row_max = _shifted(self.log_trans, 1)
        emit_cols, emit_max = _shifted(self.log_emit, 0)
        silent = torch.isneginf(self.log_emit).all(0)
        reads = self.log_emit.T.masked_fill(silent[:, None], 0.0).contiguous()
        return HMMTables(trans_cols, col_max[0], trans_rows, row_max, emit_cols, emit_max[0],
                         reads, silent)

    def resets(self, inputs: torch.Tensor, reset: torch.Tensor | None) -> torch.Tensor:
        """(B, T) bool: where the belief goes back to the start distribution (the mask, and
        every EOD input)."""
        out = torch.zeros_like(inputs, dtype=torch.bool) if reset is None else reset.bool()
        if self.config.eod_id is not None:
            out = out | (inputs == self.config.eod_id)
        return out

    @torch.no_grad()
    def beliefs(self, inputs: torch.Tensor, reset: torch.Tensor | None = None,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, S): log P(state of the symbol after input t | inputs up to t), from ``prior``
        (B, S), the belief before the first input (None: the start distribution)."""
        batch, steps = inputs.shape
        tab = self.tables()
        belief = self.log_start.expand(batch, -1) if prior is None else prior
        resets = self.resets(inputs, reset)
        flags = resets.cpu()
        some, every = flags.any(0).tolist(), flags.all(0).tolist()
        reads = tab.reads[inputs]  # (B, T, S) log emission of each input
        start = self.log_start.expand(batch, -1)
        out = torch.empty(batch, steps, self.config.states, device=inputs.device)
        for t in range(steps):
            if every[t]:
                belief = start
            else:
                belief = self._step(belief, reads[:, t], tab)
                if some[t]:
                    belief = torch.where(resets[:, t, None], start, belief)
            out[:, t] = belief
        return out

    @staticmethod
    def _step(belief: torch.Tensor, read: torch.Tensor, tab: HMMTables) -> torch.Tensor:
        """One filtering step: read the input (log emissions ``read`` (B, S)) and move along
        the transitions."""
        a = belief + read
        p = floored_exp(a - a.amax(-1, keepdim=True))
        p = p / p.sum(-1, keepdim=True)  # the posterior of the state that emitted the input
        return (p @ tab.trans_cols).log_() + tab.col_max

    @torch.no_grad()
    def logits_of(self, beliefs: torch.Tensor) -> torch.Tensor:
        """(..., S) beliefs -> (..., V) log P(next symbol): log Σ_s belief(s) emit[s, :]."""
        tab = self.tables()
        top = beliefs.amax(-1, keepdim=True)
        return (floored_exp(beliefs - top) @ tab.emit_cols).log_() + top + tab.emit_max

    @torch.no_grad()
    def emission_posteriors(self, inputs: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        """(T,) ids and reset mask -> (T, S): P(state that emitted input t | inputs up to t);
        where the belief resets (nothing is emitted) the start distribution; for an input no
        state emits, the belief before it."""
        before = torch.cat([self.log_start[None],
                            self.beliefs(inputs[None], reset[None])[0, :-1]])
        posterior = torch.log_softmax(before + self.tables().reads[inputs], dim=-1)
        resets = self.resets(inputs[None], reset[None])[0]
        return torch.where(resets[:, None], self.log_start, posterior).exp()
