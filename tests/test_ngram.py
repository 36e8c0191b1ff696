"""The n-gram baseline: interpolated modified Kneser-Ney, checked against the definition."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from charlm.checkpoint import load_checkpoint, save_checkpoint
from charlm.errors import CharLMError
from charlm.evaluate import EvalConfig, evaluate
from charlm.models.ngram import NgramLM
from charlm.text.corpus import encode_texts
from charlm.text.vocab import PAD_ID, CharVocab


def kn_reference(docs: list[list[int]], order: int, vocab) -> callable:
    """Interpolated modified Kneser-Ney written out from its definition with dicts: each
    document read as [PAD] * (order - 1) + [EOD] + its ids + [EOD]."""
    raw = [Counter() for _ in range(order + 1)]
    for doc in docs:
        seq = [PAD_ID] * (order - 1) + [vocab.eod_id] + doc + [vocab.eod_id]
        for j in range(order, len(seq)):
            for k in range(1, order + 1):
                raw[k][tuple(seq[j - k + 1:j + 1])] += 1
    adjusted = [None] * (order + 1)
    adjusted[order] = raw[order]
    for k in range(1, order):
        a = Counter()
        for gram, count in raw[k + 1].items():
            a[gram[1:]] += count if gram[0] == PAD_ID else 1
        adjusted[k] = a
    discounts = {}
    for k in range(1, order + 1):
        n = [sum(1 for c in adjusted[k].values() if c == r) for r in (1, 2, 3, 4)]
        y = n[0] / (n[0] + 2 * n[1]) if n[0] + n[1] else 0.5
        discounts[k] = [min(max(r - (r + 1) * y * n[r] / n[r - 1], 0), r) if n[r - 1] else y
                        for r in (1, 2, 3)]
    followers = [defaultdict(dict) for _ in range(order + 1)]
    for k in range(1, order + 1):
        for gram, count in adjusted[k].items():
            followers[k][gram[:-1]][gram[-1]] = count
    predicted = [i for i in range(vocab.size) if i not in vocab.never_predicted]

    def prob(w: int, history: tuple[int, ...]) -> float:
        p = 1 / len(predicted) if w in predicted else 0.0
        for k in range(1, order + 1):
            h = history[len(history) - (k - 1):] if k > 1 else ()
            f = followers[k].get(h)
            if not f:
                continue
            total = sum(f.values())
            d = discounts[k]
            gamma = sum(d[min(c, 3) - 1] for c in f.values()) / total
            c = f.get(w, 0)
            p = (c - d[min(c, 3) - 1]) / total * (c > 0) + gamma * p
        return p
    return prob


def _corpus(rng, docs=5, length=40, alphabet="abcab "):
    return ["".join(rng.choice(list(alphabet), size=rng.integers(1, length))) for _ in range(docs)]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_probabilities_equal_the_definition_written_out(order):
    rng = np.random.default_rng(order)
    texts = _corpus(rng)
    vocab = CharVocab("".join(texts) + "d")  # 'd' is in the vocab but never in the text
    split = encode_texts(vocab, texts)
    model = NgramLM.count(split.tokens, vocab, order)
    ref = kn_reference([vocab.encode(t).tolist() for t in texts], order, vocab)
    held = "abd cab" * 3
    ids = torch.tensor([[vocab.eod_id] + vocab.encode(held).tolist()])
    logits, _ = model.next_logits(ids, reset=ids == vocab.eod_id)
    probs = logits[0].double().exp()
    seq = [PAD_ID] * (order - 1) + ids[0].tolist()
    for t in range(ids.shape[1]):
        history = tuple(seq[t + 1: t + order]) if order > 1 else ()
        expected = [ref(w, history) for w in range(vocab.size)]
        assert probs[t].tolist() == pytest.approx(expected, abs=1e-6)
        assert float(probs[t].sum()) == pytest.approx(1.0, abs=1e-6)


def test_by_hand_on_a_tiny_corpus():
    """'aab', one document: targets a, a, b, EOD. Unigram raw counts a 2, b 1, EOD 1: counts of
    counts n1 = 2, n2 = 1, n3 = 0, so Y = 2 / (2 + 2) = 0.5, D1 = 1 - 2 * 0.5 * 1/2 = 0.5,
    D2 = 2 - 3 * 0.5 * 0/1 = 2; gamma = (0.5 * 2 + 2 * 1) / 4 = 0.75 over 3 symbols:
    P(a) = (2 - 2)/4 + 0.25 = 0.25, P(b) = P(EOD) = (1 - 0.5)/4 + 0.25 = 0.375.
    At order 2 the unigram level counts continuations (a after EOD and after a: 2; b: 1;
    EOD: 1), the same figures; every bigram is seen once, so D1 = 1 and each seen context
    hands all its mass to them."""
    vocab = CharVocab("ab")
    split = encode_texts(vocab, ["aab"])
    a, b, eod = vocab.encode("a")[0], vocab.encode("b")[0], vocab.eod_id
    for order in (1, 2):
        model = NgramLM.count(split.tokens, vocab, order)
        probs = model.next_logits(torch.tensor([[eod]]))[0][0, 0].double().exp()
        assert float(probs[a]) == pytest.approx(0.25)
        assert float(probs[b]) == pytest.approx(0.375)
        assert float(probs[eod]) == pytest.approx(0.375)
        assert float(probs[PAD_ID]) == 0 and float(probs[vocab.unk_id]) == 0


def test_every_context_sums_to_one_and_chunks_and_batches_agree():
    rng = np.random.default_rng(0)
    texts = _corpus(rng, docs=20, length=200, alphabet="abcdefg \n")
    vocab = CharVocab("".join(texts))
    model = NgramLM.count(encode_texts(vocab, texts).tokens, vocab, 7)
    stream = encode_texts(vocab, _corpus(rng, docs=6, length=60, alphabet="abcdefg \n")).tokens
    x = torch.from_numpy(stream.astype(np.int64))[None]
    reset = x == vocab.eod_id
    whole, state = model.next_logits(x, reset=reset)
    assert torch.allclose(torch.logsumexp(whole.double(), -1), torch.zeros(1, x.shape[1],
                                                                           dtype=torch.float64),
                          atol=1e-6)
    for size in (1, 5):
        s, parts = None, []
        for i in range(0, x.shape[1], size):
            out, s = model.next_logits(x[:, i:i + size], s, reset[:, i:i + size])
            parts.append(out)
        assert torch.equal(torch.cat(parts, 1), whole)
        assert torch.equal(s[0], state[0])
    half = x.shape[1] // 2
    batch = torch.stack([x[0, :half], x[0, half:2 * half]])
    out, _ = model.next_logits(batch, reset=batch == vocab.eod_id)
    for row in range(2):
        alone, _ = model.next_logits(batch[row:row + 1], reset=batch[row:row + 1] == vocab.eod_id)
        assert torch.equal(out[row], alone[0])


def test_evaluate_scores_the_text_under_the_model_and_the_checkpoint_keeps_it(tmp_path):
    rng = np.random.default_rng(3)
    texts = _corpus(rng, docs=10, length=100)
    vocab = CharVocab("".join(texts))
    model = NgramLM.count(encode_texts(vocab, texts).tokens, vocab, 4)
    ref = kn_reference([vocab.encode(t).tolist() for t in texts], 4, vocab)
    held = ["abca b", "bb a"]
    by_hand = 0.0
    for text in held:
        seq = [PAD_ID] * 3 + [vocab.eod_id] + vocab.encode(text).tolist() + [vocab.eod_id]
        by_hand -= sum(math.log(ref(seq[j], tuple(seq[j - 3:j]))) for j in range(4, len(seq)))
    split = encode_texts(vocab, held)
    for lanes in (1, 2):
        result = evaluate(model, vocab, split, EvalConfig(lanes=lanes))
        assert result["total_nats"] == pytest.approx(by_hand, rel=1e-6)
    save_checkpoint(tmp_path / "m.safetensors", model, vocab, {}, {})
    loaded = load_checkpoint(tmp_path / "m.safetensors").model
    x = torch.from_numpy(split.tokens.astype(np.int64))[None]
    assert torch.equal(loaded.next_logits(x)[0], model.next_logits(x)[0])
    assert loaded.count_parameters(loaded.config) == sum(
        t.numel() for t in loaded.state_dict().values())


def test_bad_orders_are_refused():
    vocab = CharVocab("ab")
    tokens = encode_texts(vocab, ["abab"]).tokens
    for order in (0, -1, 65):
        with pytest.raises(CharLMError, match="--order must be an integer from 1"):
            NgramLM.count(tokens, vocab, order)


@pytest.mark.parametrize("chunk,per", [(5, None), (64, 2), (1 << 22, None), (1 << 22, 3)])
def test_counting_in_chunks_gives_the_tables_of_counting_every_position(chunk, per, monkeypatch):
    """The packed path reads the text ``chunk`` targets at a time (chunks that cut documents,
    and merges of what is held), ``per`` symbols to a word (a gram of several words, as a
    large alphabet's are); its tables equal those of the path that counts every position at
    once, buffer for buffer."""
    import charlm.models.ngram as ngram

    if per is not None:
        monkeypatch.setattr(ngram, "per_word", lambda v: per)
    rng = np.random.default_rng(chunk)
    texts = _corpus(rng, docs=9, length=60) + ["a"]
    vocab = CharVocab("".join(texts) + "d")
    tokens = encode_texts(vocab, texts).tokens
    real = ngram.packed_grams
    monkeypatch.setattr(ngram, "packed_grams", lambda *a: real(*a, chunk=chunk))
    for order in (1, 2, 4, 7):
        packed = NgramLM.count(tokens, vocab, order)
        every = NgramLM.count(tokens, vocab, order, packed=False)
        assert packed.config == every.config
        for (name, x), (_, y) in zip(packed.state_dict().items(), every.state_dict().items()):
            assert torch.equal(x, y), (order, name)
    # A stream that does not start with EOD: the first document begins at position 0.
    assert NgramLM.count(tokens[1:], vocab, 3).config == \
        NgramLM.count(tokens[1:], vocab, 3, packed=False).config


def test_dense_and_sparse_rows_give_the_same_probabilities(monkeypatch):
    """An order whose contexts x V fit DENSE_LIMIT keeps its rows dense; the scattered rows
    of the others give the same distributions."""
    import charlm.models.ngram as ngram

    rng = np.random.default_rng(11)
    texts = _corpus(rng, docs=8, length=80, alphabet="abcdefab ")
    vocab = CharVocab("".join(texts))
    model = NgramLM.count(encode_texts(vocab, texts).tokens, vocab, 5)
    ids = torch.tensor([[vocab.eod_id] + vocab.encode("abc fed cab " * 4).tolist()])
    dense, _ = model.next_logits(ids, reset=ids == vocab.eod_id)
    assert all("dense" in t for t in model._derived())
    monkeypatch.setattr(ngram, "DENSE_LIMIT", 0)
    model._tables = None
    sparse, _ = model.next_logits(ids, reset=ids == vocab.eod_id)
    assert not any("dense" in t for t in model._derived())
    assert torch.allclose(dense.exp(), sparse.exp(), atol=1e-12, rtol=0)
