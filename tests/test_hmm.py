"""The hidden Markov model language model (models/hmm.py) and its EM training (training/em.py):
its predictions are exact forward probabilities, its E-step the exact posterior counts, EM
climbs, and a 2-state model learns the HMM that wrote its text."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import charlm.training.em as em
from charlm.errors import CharLMError
from charlm.evaluate import EvalConfig, evaluate
from charlm.models.hmm import HiddenMarkovLM, HMMConfig
from charlm.sample import SampleConfig, generate
from charlm.text.corpus import encode_texts
from charlm.text.vocab import PAD_ID, CharVocab
from charlm.training.em import EMConfig, em_pass, train_em

AB = CharVocab("ab")  # ids: 0 PAD, 1 UNK, 2 EOD, 3 a, 4 b


def random_hmm(vocab, states, seed, device="cpu") -> HiddenMarkovLM:
    """Parameters far from uniform (cubed uniform weights)."""
    g = torch.Generator().manual_seed(seed)
    model = HiddenMarkovLM(HMMConfig.for_vocab(vocab, states=states))
    model.set_probabilities(
        start=torch.rand(states, generator=g, dtype=torch.float64) ** 3 + 1e-3,
        trans=torch.rand(states, states, generator=g, dtype=torch.float64) ** 3 + 1e-3,
        emit=torch.rand(states, vocab.size, generator=g, dtype=torch.float64) ** 3 + 1e-3)
    return model.to(device)


def probabilities(model):
    return (model.log_start.double().exp(), model.log_trans.double().exp(),
            model.log_emit.double().exp())


def documents(split, vocab):
    """Each document's emissions: its symbols and the EOD that ends it (None: UNK, missing)."""
    stream = [int(i) for i in split.tokens]
    starts = [int(s) for s in split.doc_starts] + [len(stream) - 1]
    return [[None if i == vocab.unk_id else i for i in stream[a + 1:b + 1]]
            for a, b in zip(starts, starts[1:])]


def joint(model, ys, path) -> float:
    """P(path, the observed ys) in float64; a missing y has emission 1 (it is marginalised)."""
    start, trans, emit = probabilities(model)
    p = float(start[path[0]])
    for k, (z, y) in enumerate(zip(path, ys)):
        if k:
            p *= float(trans[path[k - 1], z])
        if y is not None:
            p *= float(emit[z, y])
    return p


def paths(model, length):
    return itertools.product(range(model.config.states), repeat=length)


def brute_log_likelihood(model, docs) -> float:
    return sum(math.log(sum(joint(model, ys, z) for z in paths(model, len(ys)))) for ys in docs)


def long_ids(split) -> torch.Tensor:
    return torch.from_numpy(np.asarray(split.tokens, dtype=np.int64))


# ----- the predictions ---------------------------------------------------------------------------
def test_logits_are_log_distributions_everywhere(device):
    vocab = CharVocab("abcd")
    model = random_hmm(vocab, 5, seed=1, device=device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab.size, (4, 40), generator=g)  # PAD and UNK among the inputs
    x[1, 10:] = PAD_ID
    reset = torch.rand(4, 40, generator=g) < 0.1
    logits, (state,) = model.next_logits(x.to(device), None, reset.to(device))
    assert logits.shape == (4, 40, vocab.size) and logits.dtype == torch.float32
    assert torch.allclose(torch.logsumexp(logits, -1), torch.zeros(4, 40, device=device),
                          atol=1e-5)
    assert torch.isneginf(logits[..., list(vocab.never_predicted)]).all()
    assert torch.isfinite(logits[..., vocab.eod_id:]).all()
    assert state.shape == (1, 4, 5) and torch.isfinite(state).all()
    assert torch.allclose(torch.logsumexp(state, -1), torch.zeros(1, 4, device=device),
                          atol=1e-5)


def test_chunks_and_batches_give_the_same_predictions(device):
    vocab = CharVocab("abcde")
    model = random_hmm(vocab, 6, seed=2, device=device)
    texts = [["abcab", "eedcba?ab"], ["d", "ccccccaaaaab", "e"], ["bad?", "abcdeabcde"]]
    streams = [long_ids(encode_texts(vocab, t))[:-1] for t in texts]
    length = min(len(s) for s in streams)
    whole = []
    for ids in streams:
        x = ids[None].to(device)
        full, _ = model.next_logits(x, None, x == vocab.eod_id)
        whole.append(full[0])
        for size in (1, 7):
            state, pieces = model.initial_state(1), []
            for a in range(0, len(ids), size):
                piece = x[:, a:a + size]
                out, state = model.next_logits(piece, state, piece == vocab.eod_id)
                pieces.append(out)
            assert torch.allclose(torch.cat(pieces, 1)[0], full[0], atol=1e-5)
    # Three texts side by side (resets at different places) = each alone.
    x = torch.stack([s[:length] for s in streams]).to(device)
    batch, _ = model.next_logits(x, None, x == vocab.eod_id)
    for row, alone in zip(batch, whole):
        assert torch.allclose(row, alone[:length], atol=1e-5)


def test_predictions_are_the_exact_forward_probabilities():
    model = random_hmm(AB, 3, seed=3)
    split = encode_texts(AB, ["ab?ba", "bba"])  # '?' is UNK: a missing observation
    ids = long_ids(split)
    x, y = ids[:-1][None], ids[1:]
    logits, _ = model.next_logits(x, None, x == AB.eod_id)
    scored = y != AB.unk_id
    total = float(torch.log_softmax(logits[0].double(), -1)[torch.arange(len(y)), y][scored]
                  .sum())
    expected = brute_log_likelihood(model, documents(split, AB))
    assert total == pytest.approx(expected, abs=1e-5)
    # evaluate() sums the same nats (the UNK target is not scored).
    figures = evaluate(model, AB, split, EvalConfig(lanes=1, burn_in=0))
    assert figures["total_nats"] == pytest.approx(-expected, abs=1e-4)
    assert figures["symbols"] == int(scored.sum()) == 9


def test_emission_posteriors_are_the_filtered_state_of_each_input():
    model = random_hmm(AB, 3, seed=4)
    split = encode_texts(AB, ["ba?ab", "ab"])
    ids = long_ids(split)[:-1]
    reset = ids == AB.eod_id
    got = model.emission_posteriors(ids, reset)
    assert got.shape == (len(ids), 3)
    start = model.log_start.double().exp()
    k = 0  # index of the input inside its document
    for t, i in enumerate(ids.tolist()):
        if reset[t]:
            assert torch.allclose(got[t].double(), start, atol=1e-6)
            doc, k = documents(split, AB)[int((split.doc_starts <= t).sum()) - 1], 0
            continue
        # P(z_k | emissions 0..k of the document), by summing over the paths of the prefix
        weights = torch.zeros(3, dtype=torch.float64)
        for z in paths(model, k + 1):
            weights[z[-1]] += joint(model, doc[:k + 1], z)
        assert torch.allclose(got[t].double(), weights / weights.sum(), atol=1e-5), t
        k += 1


def test_an_eod_input_starts_a_document_without_a_reset_mask():
    """Sampling feeds EOD with no mask: the prediction after it is the start's."""
    model = random_hmm(AB, 4, seed=5)
    after_eod, _ = model.next_logits(torch.tensor([[AB.eod_id]]))
    from_start = model.logits_of(model.log_start)
    assert torch.allclose(after_eod[0, 0], from_start, atol=1e-6)
    # A reset mask drops the input it marks: the prediction is the start's whatever it is.
    after, _ = model.next_logits(torch.tensor([[3, 4, 3]]), None,
                                 torch.tensor([[False, False, True]]))
    assert torch.allclose(after[0, 2], from_start, atol=1e-6)
    assert not torch.allclose(after[0, 1], from_start, atol=1e-3)
    text = generate(model, AB, SampleConfig(prime="ab", length=30, temperature=1.0, seed=0))[0]
    assert len(text) == 30 and set(text) <= set("ab\n")


# ----- the E-step and EM -----------------------------------------------------------------------
def brute_em_update(model, split, chunk_len, smoothing):
    """The parameters one pass of em_pass (one lane) should give, from expected counts summed
    over every hidden path: target k of a document conditioned on the document's targets up to
    the end of its chunk (the backward is cut there), its pair with target k-1 likewise."""
    states, vocab_size = model.config.states, model.vocab_size
    start_c, trans_c = np.zeros(states), np.zeros((states, states))
    emit_c = np.zeros((states, vocab_size))
    for ys, first in zip(documents(split, AB), split.doc_starts.tolist()):
        for k, y in enumerate(ys):
            position = first + k  # the input that target k follows
            horizon = min(len(ys), (position // chunk_len + 1) * chunk_len - first)
            weights = {z: joint(model, ys[:horizon], z) for z in paths(model, horizon)}
            total = sum(weights.values())
            for z, w in weights.items():
                w /= total
                if y is not None:
                    emit_c[z[k], y] += w
                if k == 0:
                    start_c[z[0]] += w
                else:
                    trans_c[z[k - 1], z[k]] += w
    emit_c[:, list(model.config.never_predict)] = -smoothing  # never emitted: log 0

    def log_normalised(c):
        with np.errstate(divide="ignore"):
            return np.log((c + smoothing) / (c + smoothing).sum(-1, keepdims=True))
    return log_normalised(start_c), log_normalised(trans_c), log_normalised(emit_c)


@pytest.mark.parametrize("chunk_len", [1, 3, 64])
def test_one_pass_is_the_exact_posterior_count_update(chunk_len):
    split = encode_texts(AB, ["ab?bb", "bba"])
    model = random_hmm(AB, 3, seed=6)
    expected = brute_em_update(model, split, chunk_len, smoothing=0.01)
    loss = -brute_log_likelihood(model, documents(split, AB)) / 9
    result = em_pass(model, split, EMConfig(lanes=1, chunk_len=chunk_len, smoothing=0.01))
    assert result["symbols"] == 9
    assert result["train_loss"] == pytest.approx(loss, abs=1e-6)
    for got, want in zip((model.log_start, model.log_trans, model.log_emit), expected):
        want = torch.from_numpy(want).float()
        finite = torch.isfinite(want)
        assert torch.equal(torch.isfinite(got), finite)
        assert torch.allclose(got[finite], want[finite], atol=1e-5)


def test_the_training_loss_is_what_evaluate_gives_the_parameters_before_the_pass():
    vocab = CharVocab("abcdefgh ")
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abcdefgh ?"), size=rng.integers(5, 80)))
             for _ in range(12)]
    split = encode_texts(vocab, texts)
    model = HiddenMarkovLM(HMMConfig.for_vocab(vocab, states=7))
    em.initialise(model, split, seed=0)
    for lanes, chunk_len in ((5, 16), (3, 7), (1, 1000)):
        before = evaluate(model, vocab, split, EvalConfig(lanes=lanes, burn_in=0,
                                                          bptt_len=chunk_len))
        result = em_pass(model, split, EMConfig(lanes=lanes, chunk_len=chunk_len))
        assert result["train_loss"] == pytest.approx(before["loss_nats"], rel=1e-6)
        assert result["symbols"] == before["symbols"]


def test_only_document_starts_count_as_draws_from_the_start_distribution():
    """Lanes cut inside documents start from the start distribution, but are not counted as
    draws from it. Every document starts with 'a', which only state 0 emits; the cuts fall on
    'b' and 'c', emitted by the other states."""
    vocab = CharVocab("abc")
    split = encode_texts(vocab, ["a" + "bc" * 70, "a" + "cb" * 45, "a" + "bcc" * 30])
    layout_cuts = 5  # 6 lanes: 5 cuts, all inside documents at these lengths
    model = HiddenMarkovLM(HMMConfig.for_vocab(vocab, states=3))
    emit = torch.full((3, vocab.size), 1e-3, dtype=torch.float64)
    emit[0, 3], emit[1, 4], emit[2, 5] = 1.0, 1.0, 1.0  # a: state 0, b: 1, c: 2
    model.set_probabilities(torch.ones(3), torch.ones(3, 3), emit)
    em_pass(model, split, EMConfig(lanes=layout_cuts + 1, chunk_len=32, smoothing=1e-3))
    assert float(model.log_start[0].exp()) > 0.99


def sample_hmm(rng, start, trans, emit, length) -> str:
    z, out = rng.choice(2, p=start), []
    for _ in range(length):
        out.append(rng.choice(["a", "b"], p=emit[z]))
        z = rng.choice(2, p=trans[z])
    return "".join(out)


TRUE = dict(start=[0.5, 0.5], trans=[[0.95, 0.05], [0.05, 0.95]], emit=[[0.9, 0.1], [0.1, 0.9]])


def true_model() -> HiddenMarkovLM:
    model = HiddenMarkovLM(HMMConfig.for_vocab(AB, states=2))
    emit = torch.zeros(2, AB.size, dtype=torch.float64)
    emit[:, 3:] = torch.tensor(TRUE["emit"]) * (1 - 1e-3)
    emit[:, AB.eod_id] = 1e-3
    model.set_probabilities(torch.tensor(TRUE["start"]), torch.tensor(TRUE["trans"]), emit)
    return model


def test_em_never_lowers_the_likelihood_when_the_e_step_is_exact():
    rng = np.random.default_rng(1)
    split = encode_texts(AB, [sample_hmm(rng, **TRUE, length=200) for _ in range(3)])
    model = HiddenMarkovLM(HMMConfig.for_vocab(AB, states=3))
    em.initialise(model, split, seed=0)
    config = EMConfig(lanes=1, chunk_len=1024, smoothing=1e-3)
    losses, objectives = [], []
    for _ in range(12):
        log_prior = config.smoothing * sum(float(b[torch.isfinite(b)].double().sum())
                                           for b in (model.log_start, model.log_trans,
                                                     model.log_emit))
        result = em_pass(model, split, config)
        losses.append(result["train_loss"])
        objectives.append(-result["train_loss"] * result["symbols"] + log_prior)
    assert losses[-1] < losses[0] - 0.05  # it does learn
    # MAP-EM climbs its objective; the likelihood itself, with a small pseudo-count, too.
    assert all(b >= a - 1e-4 for a, b in zip(objectives, objectives[1:])), objectives
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses


def test_a_two_state_model_learns_the_hmm_that_wrote_its_text():
    rng = np.random.default_rng(2)
    train = encode_texts(AB, [sample_hmm(rng, **TRUE, length=5000) for _ in range(4)])
    held = encode_texts(AB, [sample_hmm(rng, **TRUE, length=4000) for _ in range(2)])
    model = HiddenMarkovLM(HMMConfig.for_vocab(AB, states=2))
    # (EM from some starts sits for many passes near the saddle where both states emit the
    # unigram; this seed's start leaves it within a few passes.)
    config = EMConfig(max_iterations=30, lanes=16, chunk_len=256, tolerance=0.0, seed=3)
    records = list(train_em(model, train, config))
    assert [r["iteration"] for r in records] == list(range(1, len(records) + 1))
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(records, records[1:]))
    figures = lambda m: evaluate(m, AB, held, EvalConfig(lanes=4))["loss_nats"]  # noqa: E731
    learned, truth = figures(model), figures(true_model())
    counts = em.unigram_counts(train, AB.size).double()[2:]
    ids = long_ids(held)[1:]
    unigram = -float((counts / counts.sum()).log()[ids - 2].mean())
    assert truth < 0.5 < unigram - 0.15  # the text has structure a unigram cannot see
    assert learned == pytest.approx(truth, abs=0.05)
    trans = model.log_trans.exp()
    assert float(trans.diagonal().min()) > 0.85  # sticky states, as the truth's


def test_the_stop_rules(monkeypatch):
    """max_iterations, tolerance and max_time (a pass starts only if the longest cycle so
    far still fits), on a fake clock: each pass takes 10 s."""
    now, losses = [0.0], []

    def fake_pass(model, split, config):
        now[0] += 10.0
        return {"train_loss": losses.pop(0), "symbols": 1}
    monkeypatch.setattr(em, "em_pass", fake_pass)
    split = encode_texts(AB, ["abab"])

    def run(**options):
        now[0] = 0.0
        losses[:] = [3.0, 2.0, 1.5, 1.49995, 1.0, 0.5, 0.2]
        model = HiddenMarkovLM(HMMConfig.for_vocab(AB, states=2))
        return list(train_em(model, split, EMConfig(**options), clock=lambda: now[0]))
    assert [r["train_loss"] for r in run(tolerance=1e-4)] == [3.0, 2.0, 1.5, 1.49995]
    assert len(run(tolerance=0.0, max_iterations=6)) == 6
    timed = run(tolerance=0.0, max_time=35.0)
    assert [r["seconds"] for r in timed] == [10.0, 20.0, 30.0]
    assert len(run(tolerance=0.0, max_time=1.0)) == 1  # the first pass always runs


# ----- config, parameters, checkpoints ---------------------------------------------------------
def test_bad_options_are_refused_with_one_line():
    for states, message in ((1, "--states must be at least 2, got 1"),
                            (5000, "--states must be at most 4096, got 5000")):
        with pytest.raises(CharLMError, match=message) as caught:
            HMMConfig(vocab_size=5, states=states)
        assert "\n" not in str(caught.value)
    with pytest.raises(CharLMError, match="--smoothing"):
        EMConfig(smoothing=0.0)
    with pytest.raises(CharLMError, match="never_predict"):
        HMMConfig(vocab_size=5, never_predict=(7,))


def test_parameters_are_counted_built_on_meta_and_restored():
    config = HMMConfig.for_vocab(AB, states=6)
    with torch.device("meta"):
        meta = HiddenMarkovLM(config)
    state = meta.state_dict()
    assert sorted(state) == ["log_emit", "log_start", "log_trans"]
    assert all(t.is_meta for t in state.values())
    assert HiddenMarkovLM.count_parameters(config) == sum(t.numel() for t in state.values()) \
        == 6 + 36 + 6 * AB.size
    # Loaded weights replace the ones predictions were computed from before.
    a, b = random_hmm(AB, 6, seed=7), random_hmm(AB, 6, seed=8)
    x = torch.tensor([[AB.eod_id, 3, 4, 4, 3]])
    before = a.next_logits(x)[0]
    a.load_state_dict(b.state_dict())
    assert torch.equal(a.next_logits(x)[0], b.next_logits(x)[0])
    assert not torch.allclose(before, b.next_logits(x)[0])


@pytest.mark.parametrize("states", [2, 3, 9, 40])
def test_every_state_starts_out_owning_symbols_and_every_symbol_has_an_owner(states):
    """The start EM leaves the all-unigram saddle from: each state's emissions hold OWNED of
    their mass on at most ceil(V'/S) symbols (V' emitted), each emitted symbol has such an
    owner, PAD and UNK are never emitted; the same seed gives the same start."""
    from charlm.models.hmm import OWNED

    vocab = CharVocab("abcdefghijklmnop")
    counts = torch.arange(vocab.size, dtype=torch.float64) ** 2  # frequencies by id
    model = HiddenMarkovLM(HMMConfig.for_vocab(vocab, states=states))
    model.initialise(torch.Generator().manual_seed(5), counts)
    emit = model.log_emit.exp()  # (S, V)
    assert torch.allclose(emit.sum(-1), torch.ones(states, dtype=emit.dtype))
    assert float(emit[:, list(vocab.never_predicted)].max()) == 0
    emitted = vocab.size - len(vocab.never_predicted)
    share = -(-emitted // states)
    ranked = emit.sort(-1, descending=True)
    assert float(ranked.values[:, :share].sum(-1).min()) >= OWNED
    owned = set(ranked.indices[:, :share].reshape(-1).tolist())  # the states' top symbols
    assert owned >= set(range(vocab.size)) - set(vocab.never_predicted)
    again = HiddenMarkovLM(HMMConfig.for_vocab(vocab, states=states))
    again.initialise(torch.Generator().manual_seed(5), counts)
    assert torch.equal(again.log_emit, model.log_emit)
