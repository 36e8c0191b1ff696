"""Training a hidden Markov model (``models.hmm``) by expectation-maximisation (Baum-Welch).

One pass (``em_pass``) reads the whole training split the way ``charlm.evaluate`` reads a text:
cut into lanes by ``text.batching.LaneLayout`` (no burn-in), every lane in chunks of
``chunk_len`` symbols, all lanes at once. Per chunk:

    forward   the model's own filtering (``HiddenMarkovLM.beliefs``), the belief carried from
              the lane's previous chunk; its predictions score the chunk's targets, so the
              pass's loss is what ``evaluate`` gives the parameters it started from
    backward  beta from the chunk's end (where it is 1: the pass does not look further ahead)
              back to its start, cut wherever the belief resets (the future after a document's
              end says nothing about it)
    counts    posterior of each target's state -> emission counts (and start counts at each
              document start); posterior of consecutive pairs -> transition counts

In the chain, target t (the symbol after input t) is emitted by state z_t. z_t follows z_{t-1}
by a transition unless the belief resets at input t: an EOD input (a document starts; the EOD
before it, as a target, was the previous document's last emission) or the first input of a lane.
A lane that starts inside a document starts from the start distribution, like evaluation, but
is not counted as a draw from it. A target no state emits (UNK) is a missing observation: its
state is inferred from its neighbours and nothing is counted for the symbol.

The M-step adds ``smoothing`` to every count (a Dirichlet prior: MAP-EM, whose objective, the
log-likelihood plus smoothing x the sum of the log-parameters, never decreases when the E-step
is exact: one lane, one chunk). ``train_em`` runs passes until a stop rule holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CharLMError
from ..models.hmm import HiddenMarkovLM, floored_exp
from ..options import Options, non_negative_number, option, positive_int, positive_number, seed
from ..predictor import loss_sum
from ..text.batching import LaneLayout
from ..text.corpus import Split
from ..text.vocab import PAD_ID

COUNT_BLOCK = 1 << 24  # ids counted at a time for the unigram (memory stays flat)


@dataclass(frozen=True)
class EMConfig(Options):
    """How an HMM is trained (saved in a run's config.json under "train")."""

    section = "train"

    max_iterations: int = option(50, "EM passes over the training text (at most).",
                                 check=positive_int)
    max_time: float | None = option(
        None, "Stop after this many seconds of training (wall clock, the validation passes "
              "included).", check=positive_number, default_help="unset")
    seed: int = option(0, "Random seed of the initial parameters.", check=seed)
    lanes: int = option(64, "Parallel stretches of the training text in each EM pass.",
                        check=positive_int)
    chunk_len: int = option(512, "Symbols per chunk of the forward-backward pass; the belief is "
                                 "carried across chunks of a lane, the backward pass is cut at "
                                 "the chunk's end.", check=positive_int, command_line=False)
    smoothing: float = option(1e-2, "Pseudo-count added to every expected count of transitions "
                                    "and emissions (> 0: no probability becomes zero).",
                              check=positive_number)
    tolerance: float = option(1e-4, "Stop when a pass improves the training loss by less than "
                                    "this many nats per symbol.", check=non_negative_number)


def unigram_counts(split: Split, vocab_size: int) -> torch.Tensor:
    """(V,) how often each id is a target of the split (every id after the first)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    tokens = split.tokens
    for begin in range(1, len(tokens), COUNT_BLOCK):
        block = np.asarray(tokens[begin:begin + COUNT_BLOCK]).astype(np.int64)
        counts += np.bincount(block, minlength=vocab_size)[:vocab_size]
    return torch.from_numpy(counts)


def initialise(model: HiddenMarkovLM, split: Split, seed: int) -> None:
    """Random parameters, the same for the same seed: Dirichlet(1) start and transitions,
    each state's emissions concentrated on the symbols it starts out owning, the split's
    symbol frequencies giving the ranks (see ``HiddenMarkovLM.initialise``)."""
    generator = torch.Generator().manual_seed(seed)
    model.initialise(generator, unigram_counts(split, model.vocab_size).double())


def _layout(model: HiddenMarkovLM, split: Split, config: EMConfig) -> LaneLayout:
    if model.config.eod_id is None:
        raise CharLMError("the HMM's config has no EOD id (build it with HMMConfig.for_vocab)")
    return LaneLayout(split.tokens, split.doc_starts, config.lanes, config.chunk_len,
                      model.config.eod_id)


@torch.no_grad()
def em_pass(model: HiddenMarkovLM, split: Split, config: EMConfig) -> dict:
    """One Baum-Welch iteration over ``split`` (see the module doc), updating ``model`` in
    place. Returns the training loss (nats per scored symbol) under the parameters the pass
    started from, and the symbols scored."""
    layout = _layout(model, split, config)
    tab = model.tables()
    eod = model.config.eod_id
    device, states = model.device, model.config.states
    lanes = layout.num_lanes
    start_counts = torch.zeros(states, dtype=torch.float64, device=device)
    pair_weights = torch.zeros(states, states, dtype=torch.float64, device=device)
    emit_counts = torch.zeros(model.vocab_size, states, dtype=torch.float64, device=device)
    belief = model.initial_state(lanes)[0][0]
    last_posterior = torch.zeros(lanes, states, device=device)  # filtered, of the last target
    total, count = 0.0, 0
    for chunk in range(layout.chunks_per_epoch):
        b = layout.batch(chunk)
        x = torch.from_numpy(b.inputs).to(device)
        y = torch.from_numpy(b.targets).to(device)
        reset = torch.from_numpy(b.reset).to(device)
        valid = y != PAD_ID  # inside the lane (no burn-in: every such target is scored)

        # Forward: the model's own filtering; the loss exactly as evaluate() scores it.
        beliefs = model.beliefs(x, reset, belief)  # (B, T, S): prior of each target's state
        belief = beliefs[:, -1]
        scored = y.masked_fill(tab.silent[y], PAD_ID)
        s, n = loss_sum(model.logits_of(beliefs), scored)
        total += float(s)
        count += n
        reads = tab.reads[y]  # (B, T, S) log emission of each target; 0 where missing
        filtered = torch.log_softmax(beliefs + reads, dim=-1)

        # Backward, inside the chunk. A transition leads into target t unless input t resets.
        follows = valid & ~model.resets(x, reset)
        beta = _backward(reads, follows, tab)
        posterior = floored_exp(torch.log_softmax(filtered + beta, dim=-1))

        # Emissions of the observed targets; starts at document starts.
        observed = (scored != PAD_ID)[..., None]
        emit_counts.index_add_(0, y.reshape(-1),
                               (posterior * observed).reshape(-1, states).double())
        start_counts += (posterior * ((x == eod) & valid)[..., None]).sum((0, 1)).double()

        # Pairs (z_{t-1}, z_t): P ∝ filtered_{t-1}(i) trans(i, j) exp(ahead_t(j)), ahead =
        # reads + beta, normalised by Σ_j exp(prior_t(j) + ahead_t(j)); the products with trans
        # are taken once, after the pass. The first target's predecessor is the last one of
        # the lane's previous chunk (its filtered posterior: the backward was cut there).
        ahead = reads + beta
        norm = torch.logsumexp(beliefs + ahead, dim=-1, keepdim=True)
        into = floored_exp(ahead - norm) * follows[..., None]
        before = floored_exp(torch.cat([last_posterior[:, None], filtered[:, :-1]], dim=1))
        pair_weights += (before.reshape(-1, states).T @ into.reshape(-1, states)).double()
        last_posterior = filtered[:, -1]

    if count == 0:
        raise CharLMError("the training text holds no symbol the HMM can emit")
    alpha = config.smoothing
    trans_counts = pair_weights * model.log_trans.double().exp()
    model.set_probabilities(start=start_counts + alpha, trans=trans_counts + alpha,
                            emit=emit_counts.T + alpha)
    return {"train_loss": total / count, "symbols": count}


def _backward(reads: torch.Tensor, follows: torch.Tensor, tab) -> torch.Tensor:
    """(B, T, S) log beta_t(s) = log P(the chunk's later targets of the document | z_t = s),
    up to a constant per position: 0 at the chunk's end and wherever no transition leads on."""
    batch, steps, states = reads.shape
    beta = torch.zeros_like(reads)
    leads_on = follows.any(0).cpu().tolist()
    for t in range(steps - 2, -1, -1):
        if not leads_on[t + 1]:
            continue
        a = reads[:, t + 1] + beta[:, t + 1]
        # log Σ_j trans(s, j) exp(a_j), dropping the per-lane shift (a constant over s)
        step = (floored_exp(a - a.amax(-1, keepdim=True)) @ tab.trans_rows.T).log_() \
            + tab.row_max[:, 0]
        beta[:, t] = torch.where(follows[:, t + 1, None], step, 0.0)
    return beta


def train_em(model: HiddenMarkovLM, train_split: Split, config: EMConfig,
             clock: Callable[[], float] = time.perf_counter) -> Iterator[dict]:
    """Initialise ``model``, then run EM passes over ``train_split``, yielding after each (the
    model updated in place) ``{"iteration", "train_loss", "seconds"}``: the loss is under the
    parameters before that pass's update; seconds since training began.

    Stops after ``max_iterations`` passes; when a pass improved the loss by less than
    ``tolerance`` (that pass's record is the last); and with ``max_time``, before a pass that
    would not fit: one starts only while the time so far plus the longest pass so far (with
    what the caller did after it, a validation say) stays within the budget. The first pass
    always runs."""
    begin = clock()
    initialise(model, train_split, config.seed)
    previous, longest = None, 0.0
    for iteration in range(1, config.max_iterations + 1):
        started = clock()
        if iteration > 1 and config.max_time is not None \
                and started - begin + longest > config.max_time:
            return
        result = em_pass(model, train_split, config)
        yield {"iteration": iteration, "train_loss": result["train_loss"],
               "seconds": clock() - begin}
        longest = max(longest, clock() - started)
        loss = result["train_loss"]
        if previous is not None and previous - loss < config.tolerance:
            return
        previous = loss
