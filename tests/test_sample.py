import pytest

import charlm
from charlm.api import build_trainer
from charlm.errors import CharLMError


@pytest.fixture
def lm(tmp_path, small_corpus, tiny_options):
    build_trainer(small_corpus, out=tmp_path / "run", **tiny_options()).run()
    return charlm.load(tmp_path / "run")


def test_same_seed_same_text(lm):
    a = lm.sample("ROMEO:", length=80, temperature=1.0, seed=7)
    b = lm.sample("ROMEO:", length=80, temperature=1.0, seed=7)
    c = lm.sample("ROMEO:", length=80, temperature=1.0, seed=8)
    assert a == b and a != c and len(a) == 80


def test_greedy_is_deterministic_without_seed(lm):
    assert lm.sample("First", length=40, temperature=0) == lm.sample("First", length=40,
                                                                      temperature=0, seed=123)


def test_streaming_delivers_the_same_text_piece_by_piece(lm):
    pieces = []
    text = lm.sample("KING", length=60, temperature=0.9, seed=3,
                     on_text=lambda i, piece: pieces.append(piece))
    assert len(pieces) >= 50 and "".join(pieces) == text


def test_one_step_of_work_per_symbol(lm, monkeypatch):
    import charlm.sample as sampling

    lengths, drawn = [], []
    original_forward, original_stepper, original_pick = (lm.model.forward, lm.model.stepper,
                                                         sampling.pick)

    def counting(inputs, *args, **kwargs):
        lengths.append(inputs.shape[1])
        return original_forward(inputs, *args, **kwargs)

    def counting_stepper():
        step = original_stepper()

        def counted(ids, state):
            assert ids.dim() == 1  # one id per lane
            lengths.append(1)
            return step(ids, state)
        return counted

    def recording(*args, **kwargs):
        ids = original_pick(*args, **kwargs)
        drawn.extend(ids.tolist())
        return ids
    lm.model.forward, lm.model.stepper = counting, counting_stepper
    monkeypatch.setattr(sampling, "pick", recording)
    text = lm.sample("ab", length=100, temperature=1.0, seed=0)
    assert len(text) == 100
    assert lengths[0] == 3  # EOD + the prime, read once
    assert lengths[1:] == [1] * (len(lengths) - 1)  # then one symbol per step
    assert len(lengths) == 1 + len(drawn)  # one step for each symbol drawn, nothing more
    # A drawn EOD writes the whole separator, so the draws may be fewer than the characters;
    # every draw still writes at least one character.
    ends = drawn.count(lm.vocab.eod_id)
    assert len(drawn) == 100 - ends * (len(lm.separator) - 1) or \
        (len(drawn) <= 100 and drawn[-1] == lm.vocab.eod_id)


def test_pad_and_unk_are_never_sampled(lm, monkeypatch):
    import charlm.sample as sampling

    drawn, original = [], sampling.pick

    def recording(*args, **kwargs):
        ids = original(*args, **kwargs)
        drawn.extend(ids.tolist())
        return ids
    monkeypatch.setattr(sampling, "pick", recording)
    lm.sample(length=300, temperature=5.0, seed=1, num_samples=4)
    assert len(drawn) >= 4 * 250  # every draw was seen
    assert 0 not in drawn and lm.vocab.unk_id not in drawn


def test_batch_of_samples(lm):
    texts = lm.sample("A", length=30, temperature=1.0, seed=5, num_samples=3)
    assert len(texts) == 3 and all(len(t) == 30 for t in texts)
    assert len(set(texts)) > 1


def test_unseen_prime_characters_warn(lm):
    warnings = []
    lm.sample("ROMEO 🙂", length=5, seed=0, on_warning=warnings.append)
    assert warnings and "never saw" in warnings[0]
    with pytest.raises(CharLMError, match="only characters"):
        lm.sample("🙂🙂", length=5, seed=0)


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(length=-5), dict(top_k=-2),
                                 dict(num_samples=0)])
def test_bad_sampling_options(lm, bad):
    with pytest.raises(CharLMError):
        lm.sample("x", **{"length": 5, **bad})


def test_top_k_one_equals_greedy(lm):
    assert lm.sample("The", length=50, temperature=1.3, top_k=1, seed=4) == \
        lm.sample("The", length=50, temperature=0)


def test_sample_i_of_a_batch_equals_a_single_sample_with_seed_plus_i(lm):
    batch = lm.sample("KING", length=120, temperature=1.0, seed=40, num_samples=3)
    for i, text in enumerate(batch):
        assert text == lm.sample("KING", length=120, temperature=1.0, seed=40 + i)


def test_top_k_one_is_greedy_and_draws_follow_the_distribution(lm):
    import torch
    from charlm.sample import pick

    greedy = lm.sample("The ", length=50, temperature=0)
    assert lm.sample("The ", length=50, temperature=1.3, top_k=1, seed=9) == greedy
    # Inverse-CDF draws: with uniforms spread evenly over [0, 1), each id is drawn in
    # proportion to its probability, and zero-probability ids never.
    logits = torch.tensor([[float("-inf"), 0.0, 1.0, float("-inf"), 2.0]])
    n = 10_000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ids = pick(logits.expand(n, -1), 1.0, None, u)
    counts = torch.bincount(ids, minlength=5).double() / n
    expect = torch.softmax(logits[0].double(), -1)
    assert counts[0] == 0 and counts[3] == 0
    assert torch.allclose(counts, expect, atol=2e-4)
    top = pick(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), 1.0, 2, torch.tensor([0.999999999]))
    assert int(top) in (1, 3)
    assert int(pick(logits, 1.0, None, torch.tensor([1 - 2**-53]))) == 4  # the very top


def test_eval_lanes_do_not_change_the_figure(lm, small_text, monkeypatch):
    import charlm.evaluate as evaluation
    from charlm.evaluate import MAX_LANES, MIN_LANES, auto_lanes

    assert auto_lanes(1_000) == MIN_LANES and auto_lanes(10**9) == MAX_LANES
    assert MIN_LANES < auto_lanes(3_000_000) < MAX_LANES
    # A large vocab keeps the logits of a chunk bounded: fewer lanes.
    assert auto_lanes(10**9, 256, 8192) == MIN_LANES
    assert auto_lanes(10**9, 256, 8192) * 256 * 8192 <= evaluation.MAX_LOGITS
    monkeypatch.setattr(evaluation, "SYMBOLS_PER_LANE", 1000)  # so this text gets ~60 lanes
    text = small_text * 3  # ~60k characters
    assert auto_lanes(len(text)) > MIN_LANES
    one = lm.evaluate(text, lanes=1, burn_in=256)  # a single sequential pass
    for lanes in (None, 7, 64):
        many = lm.evaluate(text, lanes=lanes, burn_in=256)
        assert many["symbols"] == one["symbols"]  # every symbol scored exactly once
        assert abs(many["loss_nats"] - one["loss_nats"]) < 2e-3, lanes


def test_bf16_evaluation_is_close_to_the_exact_figure(lm, small_text):
    exact = lm.evaluate(small_text)
    fast = lm.evaluate(small_text, precision="bf16")
    assert fast["symbols"] == exact["symbols"]
    assert fast["loss_nats"] != exact["loss_nats"]  # it really ran in another precision
    assert abs(fast["loss_nats"] - exact["loss_nats"]) < 0.01
    with pytest.raises(CharLMError, match="precision"):
        lm.evaluate(small_text, precision="fp16")


def test_streamed_text_is_flushed_by_the_clock_not_per_piece(monkeypatch):
    import io

    from charlm.cli import common

    class Sink(io.StringIO):
        flushes = 0

        def flush(self):
            Sink.flushes += 1

    now = [100.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    sink = Sink()
    writer = common.Streamed(sink)
    for _ in range(10):  # ten pieces within one flush period: none flushed yet
        writer.write("a")
        now[0] += common.Streamed.FLUSH_SECONDS / 20
    assert Sink.flushes == 0 and sink.getvalue() == ""
    now[0] += common.Streamed.FLUSH_SECONDS
    writer.write("b")  # the period has passed: this one is flushed
    assert Sink.flushes == 1
    writer.flush()
    assert sink.getvalue() == "a" * 10 + "b" and Sink.flushes == 2


def test_the_nucleus_is_the_fewest_most_likely_ids_that_reach_p():
    import torch
    from charlm.sample import outside_nucleus

    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]], dtype=torch.float64)
    kept = {p: (~outside_nucleus(probs, p)[0]).nonzero().flatten().tolist()
            for p in (0.2, 0.5, 0.79, 0.8, 0.81, 0.95, 0.96, 1.0)}
    assert kept == {0.2: [1], 0.5: [1], 0.79: [1, 3], 0.8: [1, 3], 0.81: [0, 1, 3],
                    0.95: [0, 1, 3], 0.96: [0, 1, 2, 3], 1.0: [0, 1, 2, 3]}
    ties = torch.tensor([[0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    assert (~outside_nucleus(ties, 0.5)[0]).tolist() == [True, True, False, False]


def test_top_p_draws_only_from_the_nucleus_in_proportion_to_the_renormalised_probabilities():
    import torch
    from scipy.stats import chisquare
    from charlm.sample import pick

    g = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([[0.02, 0.4, 0.0, 0.25, 0.08, 0.2, 0.05]]))
    n = 40_000
    u = torch.rand(n, generator=g, dtype=torch.float64)
    # At temperature 1 the nucleus of 0.8 is ids 1, 3, 5 (0.85); at temperature 2 the
    # distribution flattens (0.284, 0.225, 0.201, 0.127, 0.100...) and it takes more ids.
    for temperature, top_p, nucleus in ((1.0, 0.8, [1, 3, 5]), (1.0, 0.86, [1, 3, 4, 5]),
                                        (2.0, 0.8, [1, 3, 4, 5]), (2.0, 0.85, [1, 3, 4, 5, 6])):
        ids = pick(logits.expand(n, -1), temperature, None, u, top_p)
        counts = torch.bincount(ids, minlength=7)
        assert sorted(counts.nonzero().flatten().tolist()) == nucleus
        p = torch.softmax(logits[0].double() / temperature, -1)[nucleus]
        expected = (p / p.sum() * n).tolist()
        assert chisquare(counts[nucleus].tolist(), expected).pvalue > 1e-3, (temperature, top_p)
    # With top-k the nucleus is taken within the k most likely.
    ids = pick(logits.expand(n, -1), 1.0, 2, u, 0.9)
    assert sorted(torch.bincount(ids).nonzero().flatten().tolist()) == [1, 3]


def test_sampling_with_top_p_stays_in_each_steps_nucleus(lm, monkeypatch):
    import torch
    import charlm.sample as sampling

    seen, original = [], sampling.pick

    def recording(logits, temperature, top_k, uniforms, top_p=None):
        ids = original(logits, temperature, top_k, uniforms, top_p)
        seen.append((logits.clone(), ids))
        return ids
    monkeypatch.setattr(sampling, "pick", recording)
    text = lm.sample("The ", length=150, temperature=1.2, top_p=0.6, seed=2)
    assert len(text) == 150 and len(seen) >= 100
    for logits, ids in seen:
        probs = torch.softmax(logits.double() / 1.2, -1)
        assert not sampling.outside_nucleus(probs, 0.6)[0, ids[0]]
    monkeypatch.setattr(sampling, "pick", original)
    assert lm.sample("The ", length=150, temperature=1.2, top_p=1.0, seed=2) == \
        lm.sample("The ", length=150, temperature=1.2, seed=2)


def test_stop_strings_end_each_sample_before_they_appear(lm):
    free = lm.sample("KING", length=300, temperature=1.0, seed=11, num_samples=3)
    stops = ("e ", "\n")
    stopped = lm.sample("KING", length=300, temperature=1.0, seed=11, num_samples=3,
                        stop=stops)
    for whole, cut in zip(free, stopped):  # (the stops cannot overlap)
        end = min([i for i in (whole.find(s) for s in stops) if i >= 0] + [len(whole)])
        assert cut == whole[:end]
    assert any(len(c) < 300 for c in stopped)  # the test needs samples that stop
    pieces = []
    streamed = lm.sample("KING", length=300, temperature=1.0, seed=12, stop="ou",
                         on_text=lambda _, piece: pieces.append(piece))
    assert "".join(pieces) == streamed and "ou" not in streamed


def test_a_stop_string_is_found_however_the_text_arrives():
    import random
    from charlm.sample import StopAt

    rng = random.Random(0)
    for _ in range(500):
        text = "".join(rng.choice("abc\n") for _ in range(rng.randint(0, 40)))
        stops = tuple({"".join(rng.choice("abc\n") for _ in range(rng.randint(1, 4)))
                       for _ in range(rng.randint(1, 3))})
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 5)))
        stop, out = StopAt(stops), []
        for a, b in zip([0] + cuts, cuts + [len(text)]):
            out.append(stop.push(text[a:b]))
        if not stop.done:
            out.append(stop.flush())
        # The sample ends at the stop string completed first (the longer of two that end
        # together), before it.
        hits = [(i + len(s), i) for s in stops if (i := text.find(s)) >= 0]
        end = min(hits)[1] if hits else len(text)
        assert "".join(out) == text[:end], (text, stops, cuts)
        assert stop.done == bool(hits)
