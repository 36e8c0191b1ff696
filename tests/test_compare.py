"""charlm compare: per-symbol losses that add up to the evaluation, the categories of a text,
runs with other vocabs side by side, the command and its page in a real browser."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import charlm
from charlm.api import build_trainer
from charlm.cli import app
from charlm.compare import Slots, breakdown, categories, char_slots, compare, page_data
from charlm.errors import CharLMError
from charlm.evaluate import EvalConfig, evaluate, symbol_losses
from charlm.text.corpus import encode_texts
from charlm.text.vocab import BPEVocab

LN2 = math.log(2.0)


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def runs(tmp_path, small_corpus, tiny_options):
    """A recurrent run and an n-gram on the same corpus."""
    build_trainer(small_corpus, out=tmp_path / "rnn", **tiny_options(max_steps=30)).run()
    assert _run("baseline", "ngram", small_corpus, "--order", 3, "--out",
                tmp_path / "ngram").exit_code == 0
    return tmp_path / "rnn", tmp_path / "ngram"


def test_per_symbol_losses_add_up_to_the_evaluation(runs, small_text):
    for run in runs:
        lm = charlm.load(run)
        split = lm.encode([small_text[:3000] + "\u00e9\u4e2d", "Second document.\n"])
        for lanes in (1, 7):
            config = EvalConfig(lanes=lanes)
            losses = symbol_losses(lm.model, lm.vocab, split, config)
            figures = evaluate(lm.model, lm.vocab, split, config)
            scored = ~np.isnan(losses)
            assert scored.sum() == figures["symbols"]
            assert np.nansum(losses) == pytest.approx(figures["total_nats"], rel=1e-6)
            assert not scored[0]  # the first EOD is read, never predicted
            assert not scored[split.tokens == lm.vocab.unk_id].any()  # unknown: not scored
        # One lane from the start reads every symbol in order: the losses are the ones of
        # a single forward over the whole stream.
        ids = split.tokens[:400]
        single = symbol_losses(lm.model, lm.vocab, lm.encode(small_text[:398]),
                               EvalConfig(lanes=1))
        logits = lm.logits(small_text[:398])
        logp = logits.log_softmax(-1)[:-1].gather(1, _t(ids[1:399])[:, None])[:, 0]
        assert np.allclose(single[1:399], -logp.double().numpy(), atol=1e-5)


def _t(a):
    import torch
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def test_the_categories_of_a_hand_made_text():
    text = 'He said "no (way)" then\nWe\'ll go.'
    chars = list(text) + [""] + list('"x(')
    end = np.array([c == "" for c in chars])
    cats = categories(chars, end)

    def at(name):
        return "".join(c for c, m in zip(chars, cats[name]) if m)

    assert at("after a newline") == "W"
    assert at("word start") == "HsnwtWgx"
    assert at("rest of a word") == "eaidoayhenello"  # We'll: "ll" continue the word
    assert at("inside quotes") == 'no (way)"' + "x("  # a quote left open at the end
    assert at("closing quote") == '"'
    assert at("1-5 after an opening bracket") == "way)"
    assert at("closing bracket") == ")"
    assert at("end of a document") == ""
    assert cats["end of a document"].sum() == 1
    # Nothing carries over a document's end: the second document's quote and bracket start
    # afresh (its "x" is not inside the first document's quotes as a closing one would be).
    assert not cats["inside quotes"][chars.index("")]


def test_slots_spread_a_tokens_loss_over_its_characters(tmp_path):
    texts = ["the cat sat on the mat, the hat \u00e9t\u00e9 " * 30]
    vocab = BPEVocab.train(iter(texts), vocab_size=300)
    split = encode_texts(vocab, ["the mat \u00e9t\u00e9", "a hat"])
    losses = np.arange(len(split.tokens), dtype=np.float64)
    losses[0] = np.nan
    end, nats = char_slots(vocab, split.tokens, losses)
    assert len(end) == len("the mat \u00e9t\u00e9") + len("a hat") + 2
    assert np.flatnonzero(end).tolist() == [11, 17]  # after each document's characters
    assert nats.sum() == pytest.approx(np.nansum(losses))  # nothing lost or counted twice


def test_breakdown_and_page_figures_are_the_slots_means():
    chars = list("ab\ncd") + [""]
    end = np.array([False] * 5 + [True])
    nats = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, np.nan, 1.0, 1.0, 1.0, 1.0]])
    rows = {r["category"]: r for r in breakdown(Slots(chars, end, nats))}
    everything = rows["all characters"]
    assert everything["count"] == 4  # "b" is not scored by the second run: left out of both
    assert everything["bits"][0] == pytest.approx((1 + 3 + 4 + 5) / 4 / LN2)
    assert everything["bits"][1] == pytest.approx((2 + 1 + 1 + 1) / 4 / LN2)
    assert rows["after a newline"]["count"] == 1
    result = {"runs": [{"name": n, "kind": "k", "figures": {"bpc": 1.0, "chars": 5,
                                                            "unknown": 0}} for n in "ab"],
              "breakdown": list(rows.values()), "slots": Slots(chars, end, nats)}
    data = page_data(result, 3, "t")
    assert data["chars"] == list("ab\n") and data["bits"][1][1] is None
    assert data["bits"][0] == [round(v / LN2, 3) for v in (1.0, 2.0, 3.0)]


def test_compare_sets_runs_side_by_side(runs, small_text):
    lms = [charlm.load(r) for r in runs]
    texts = [small_text[:2000], 'And "so (it goes)" on.\n']
    result = compare(lms, ["rnn", "ngram"], texts)
    for lm, r in zip(lms, result["runs"]):
        assert r["figures"]["bpc"] == pytest.approx(lm.evaluate(texts)["bpc"], rel=1e-6)
    slots = result["slots"]
    assert "".join(slots.chars) == "".join(texts)
    # The slots hold every nat of the evaluation, the ends of documents included.
    for r, row in zip(result["runs"], slots.nats):
        assert np.nansum(row) == pytest.approx(r["figures"]["total_nats"], rel=1e-6)
    # The default text: the first run's validation split, read as `charlm eval` reads it.
    default = compare(lms, ["rnn", "ngram"], None)
    assert default["runs"][0]["figures"]["bpc"] == pytest.approx(lms[0].evaluate()["bpc"],
                                                                 rel=1e-6)


def test_the_compare_command(runs, tmp_path, small_text):
    held = tmp_path / "held.txt"
    held.write_text(small_text[-3000:], encoding="utf-8")
    result = _run("compare", *runs, held, "--out", tmp_path / "c.html", "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert [r["name"] for r in got["runs"]] == ["rnn", "ngram"]
    assert got["runs"][1]["figures"]["bpc"] == pytest.approx(
        charlm.load(runs[1]).evaluate(small_text[-3000:])["bpc"], rel=1e-6)
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "charlm compare" in page and '"breakdown"' in page
    table = _run("compare", *runs, held, "--length", 0)
    assert table.exit_code == 0 and "word start" in table.output
    assert not (tmp_path / "compare.html").exists()  # --length 0: no page


@pytest.mark.parametrize("args,message", [
    (lambda r, t: [r[0], t], "at least two runs"),
    (lambda r, t: [r[0], r[1], t.parent / "missing.txt"], "no such run or text file"),
    (lambda r, t: [r[0], t.parent / "nothing-here", t], "no such run"),
    (lambda r, t: [r[0], r[1], t, "--out", t], "exists"),
    (lambda r, t: [r[0], r[1], t, "--length", -1], "--length must be between"),
])
def test_bad_input_is_one_line(runs, tmp_path, args, message):
    held = tmp_path / "held.txt"
    held.write_text("Some text.\n", encoding="utf-8")
    before = held.read_bytes()
    result = _run("compare", *args(runs, held))
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and held.read_bytes() == before


def test_runs_that_cut_documents_differently_are_refused(tmp_path, small_corpus, tiny_options):
    for name, sep in (("a", ["--doc-separator", "\\n\\n"]), ("b", [])):
        assert _run("baseline", "ngram", small_corpus, "--order", 2, *sep,
                    "--out", tmp_path / name).exit_code == 0
    held = tmp_path / "held.txt"
    held.write_text("One.\n\nTwo.\n", encoding="utf-8")
    result = _run("compare", tmp_path / "a", tmp_path / "b", held, "--length", 0)
    assert result.exit_code == 1 and "other documents" in result.output, result.output


def test_the_compare_page_works_in_a_real_browser(runs, tmp_path, small_text, browser):
    held = tmp_path / "held.txt"
    held.write_text(small_text[:1500] + '\n"quoted (text)"\n', encoding="utf-8")
    assert _run("compare", *runs, held, "--out", tmp_path / "c.html").exit_code == 0
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    page.goto((tmp_path / "c.html").as_uri())
    page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
    assert errors == [] and requests == [(tmp_path / "c.html").as_uri()]
    data = json.loads(page.inner_text("#report-data"))
    assert page.locator("#text span").count() == len(data["chars"])

    def colours():
        return page.evaluate("() => [...document.querySelectorAll('#text span')].slice(0, 300)"
                             ".map(s => s.style.backgroundColor)")
    diff = colours()
    assert len(set(diff)) > 5
    page.select_option("#run-b", "-1")  # A's own bits
    assert colours() != diff
    page.hover("#text span[data-i='40']")
    tip = page.inner_text("#tip")
    assert "1. rnn" in tip and "2. ngram" in tip
    rows = page.locator("#breakdown tbody tr")
    assert rows.count() >= 5 and "all characters" in rows.first.inner_text()


def test_a_bpe_run_and_a_char_run_side_by_side(runs, tmp_path, small_corpus, tiny_options,
                                               small_text):
    """Another vocab reads the same text: a BPE model's losses are spread over the characters
    of its tokens, every nat kept, and its slots line up with the char model's."""
    build_trainer(small_corpus, out=tmp_path / "bpe",
                  **tiny_options(max_steps=10, vocab="bpe", vocab_size=300)).run()
    bpe, ngram = charlm.load(tmp_path / "bpe"), charlm.load(runs[1])
    assert bpe.vocab.kind == "bpe" and ngram.vocab.kind == "char"
    texts = [small_text[:1200] + "\u00e9t\u00e9 \u2014 fin"]
    result = compare([bpe, ngram], ["bpe", "ngram"], texts)
    slots = result["slots"]
    assert "".join(slots.chars) == texts[0] and slots.nats.shape == (2, len(texts[0]) + 1)
    for r, row in zip(result["runs"], slots.nats):
        assert np.nansum(row) == pytest.approx(r["figures"]["total_nats"], rel=1e-6)
    assert result["runs"][0]["figures"]["bpc"] == pytest.approx(bpe.evaluate(texts)["bpc"],
                                                                rel=1e-6)


def test_a_stray_closing_bracket_closes_nothing():
    chars = list("[a) bcd] x")
    cats = categories(chars, np.zeros(len(chars), bool))
    inside = [c for c, m in zip(chars, cats["1-5 after an opening bracket"]
                                | cats["6-20 after an opening bracket"]) if m]
    assert "".join(inside) == "a) bcd]"  # the ")" opened nothing: the "[" stays open
    assert [c for c, m in zip(chars, cats["closing bracket"]) if m] == ["]"]


def test_a_text_a_run_cannot_score_is_refused(runs):
    lms = [charlm.load(r) for r in runs]
    with pytest.raises(CharLMError, match="no text to score: every character is unknown"):
        compare(lms, ["rnn", "ngram"], ["\u4e2d\u6587\u5b57"])
