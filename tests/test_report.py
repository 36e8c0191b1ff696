"""charlm inspect: the trace of a model's internals, the analysis, and the page in a real
browser."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import charlm
from charlm.api import build_trainer
from charlm.cli import app
from charlm.models import LMConfig, RecurrentLM
from charlm.report import InspectConfig, build_report
from charlm.report.page import LEVELS, pack, quantise, symbol_texts, unpack
from charlm.report.trace import GATES, SERIES, Trace, trace, trace_layers
from charlm.report.units import correlations, gate_statistics, interpretable_units, properties

runner = CliRunner()
CELLS = [(cell, ln) for cell in ("lstm", "gru", "rnn", "irnn", "leaky", "jordan")
         for ln in (False, True)]


@pytest.mark.parametrize("cell,layer_norm", CELLS, ids=[f"{c}{'-ln' if n else ''}"
                                                        for c, n in CELLS])
def test_the_traced_layers_are_the_models_own_computation(cell, layer_norm):
    torch.manual_seed(0)
    model = RecurrentLM(LMConfig(vocab_size=20, cell=cell, num_layers=2, hidden_dim=16,
                                 embed_dim=8, layer_norm=layer_norm, learn_init_state=True,
                                 never_predict=(0, 1))).eval()
    for p in model.backbone.init_state:
        p.data.normal_()
    ids = torch.randint(3, 20, (70,))
    ids[0] = ids[30] = 2  # two documents: the state starts again at the second
    with torch.no_grad():
        features, _ = model.backbone(ids[None], None, (ids == 2)[None], readout=model.head)
        layers, top = trace_layers(model, ids, ids == 2)
    assert torch.allclose(top, features[0], atol=1e-5)
    assert [sorted(layer) for layer in layers] == [sorted(SERIES[cell])] * 2
    for layer in layers:
        for gate in GATES.get(cell, ()):
            assert layer[gate].min() >= 0 and layer[gate].max() <= 1
    if cell == "lstm":  # h = o * tanh(c) without layer norm on c
        if not layer_norm:
            assert np.allclose(layers[0]["h"], layers[0]["o"] * layers[0]["c"], atol=1e-6)


@pytest.fixture
def lm(tmp_path, small_corpus, tiny_options):
    build_trainer(small_corpus, out=tmp_path / "run", **tiny_options(max_steps=40)).run()
    return charlm.load(tmp_path / "run")


def test_the_reports_bits_are_the_evaluations(lm, small_text):
    split = lm.encode(small_text[:1500])
    traced = trace(lm.model, np.asarray(split.tokens), lm.vocab.eod_id)
    exact = lm.evaluate(split, lanes=1)
    assert np.nansum(traced.bits) / split.chars == pytest.approx(exact["bpc"], abs=1e-4)
    # Top-5: the probabilities descend and the guess at each step is the model's argmax.
    assert (np.diff(traced.top_probs, axis=1) <= 1e-7).all()
    page, data = build_report(lm, split.tokens, InspectConfig(length=10_000), "text")
    assert data["bpc"] == pytest.approx(exact["bpc"], abs=1e-4) and data["chars"] == split.chars
    assert "".join(data["symbols"]) == small_text[:1500]


def test_the_text_is_cut_at_length_characters(lm, small_text):
    split = lm.encode(small_text)
    _, data = build_report(lm, split.tokens, InspectConfig(length=700), "text")
    assert data["chars"] == 700 and "".join(data["symbols"]) == small_text[:700]


def test_properties_of_the_text_by_hand():
    text = list('ab (c)\n"Ef" x')
    starts = np.zeros(len(text), dtype=bool)
    p = properties(text, starts)
    assert p["position in line"].tolist() == [1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6]
    assert p["position in word"].tolist() == [1, 2, 0, 0, 1, 0, 0, 0, 1, 2, 0, 0, 1]
    assert p["inside brackets"].tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert p["inside quotes"].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert p["start of a line"].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert p["uppercase letter"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_the_unit_that_tracks_a_property_is_found_first():
    rng = np.random.default_rng(0)
    text = list(("the cat sat on the mat\n" * 20))
    starts = np.zeros(len(text), dtype=bool)
    props = properties(text, starts)
    h = rng.normal(size=(len(text), 8)).astype(np.float32)
    h[:, 5] = props["position in line"] / 30 + rng.normal(scale=0.01, size=len(text))
    t = Trace(ids=np.zeros(len(text)), bits=np.zeros(len(text) - 1), top_ids=np.zeros((1, 5)),
              top_probs=np.zeros((1, 5)), cell="rnn", layers=[{"h": h}])
    found = interpretable_units(t, props)
    line = [u for u in found if u["property"] == "position in line"]
    assert line[0]["unit"] == 5 and line[0]["r"] > 0.99
    assert "inside quotes" not in {u["property"] for u in found}  # no quotes: not offered
    assert correlations(np.ones((5, 2)), np.arange(5.0)).tolist() == [0.0, 0.0]


def test_gate_saturation_and_quantisation():
    g = np.array([[0.05, 0.5], [0.95, 0.5], [0.02, 0.99], [0.5, 0.5]], dtype=np.float32)
    t = Trace(ids=np.zeros(4), bits=np.zeros(3), top_ids=np.zeros((3, 5)),
              top_probs=np.zeros((3, 5)), cell="gru",
              layers=[{"h": g, "r": g, "z": g, "n": g}])
    stats = gate_statistics(t)
    assert [(s["gate"], s["left"], s["right"]) for s in stats] == [
        ("r", [0.5, 0.0], [0.25, 0.25]), ("z", [0.5, 0.0], [0.25, 0.25])]
    values = np.linspace(-1, 1, 42, dtype=np.float32).reshape(14, 3)
    values[:, 2] *= 0.01  # a unit of small range gets all the levels too
    levels, lo, hi = quantise(values)
    assert np.array_equal(unpack(pack(levels), levels.size), levels)  # odd count: padded
    q = levels.reshape(3, 14).T  # unit-major
    back = lo + q / (LEVELS - 1) * (hi - lo)
    assert (np.abs(back - values) <= (hi - lo) / (2 * (LEVELS - 1)) + 1e-7).all()
    assert len(set(q[:, 2].tolist())) >= 12  # 14 values spread over the 16 levels


def test_a_bpe_model_reports_tokens_spanning_characters(tmp_path, small_corpus, tiny_options):
    build_trainer(small_corpus, out=tmp_path / "bpe", vocab="bpe", vocab_size=300,
                  **tiny_options()).run()
    lm = charlm.load(tmp_path / "bpe")
    text = "Before we proceed any further, hear me speak.\nCaf\u00e9 \u2014 na\u00efve."
    split = lm.encode(text)
    assert "".join(symbol_texts(lm.vocab, np.asarray(split.tokens))) == text
    _, data = build_report(lm, split.tokens, InspectConfig(), "text")
    assert max(len(s) for s in data["symbols"]) > 1 and data["chars"] == len(text)


def _inspect(*args):
    return runner.invoke(app, ["inspect", *map(str, args)])


def test_inspect_command_and_its_bad_input(lm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("First Citizen:\nYou are all resolved rather to die?\n")
    (tmp_path / "empty.txt").write_text("")
    run = lm.path.parent
    for name in ("report.html", "report-2.html"):
        r = _inspect("t.txt", "--checkpoint", run)
        assert r.exit_code == 0, r.stderr
        assert (tmp_path / name).read_text().startswith("<!DOCTYPE html>") and name in r.stderr
    mine = tmp_path / "mine.html"
    mine.write_text("keep me")
    hidden = lm.model.config.hidden_dim
    bad = {
        "exists": (["t.txt", "--out", mine], "exists"),
        "no checkpoint": (["t.txt", "--checkpoint", tmp_path / "nowhere"], "not found"),
        "empty text": (["empty.txt", "--checkpoint", run], "holds no text"),
        "missing text": (["gone.txt", "--checkpoint", run], "no such file"),
        "unit out of range": (["t.txt", "--checkpoint", run, "--unit", f"1:c:{hidden}"],
                              f"unit {hidden} is out of range (0 to {hidden - 1})"),
        "layer out of range": (["t.txt", "--checkpoint", run, "--unit", "3:h:0"],
                               "layer 3 is out of range"),
        "no such series": (["t.txt", "--checkpoint", run, "--unit", "1:z:0"],
                           "has no series 'z'"),
        "unit syntax": (["t.txt", "--checkpoint", run, "--unit", "c5"], "LAYER:SERIES:UNIT"),
        "gate without --gates": (["t.txt", "--checkpoint", run, "--unit", "1:f:0"],
                                 "with --gates"),
        "zero length": (["t.txt", "--checkpoint", run, "--length", "0"], "--length must be"),
    }
    for case, (args, message) in bad.items():
        r = _inspect(*args)
        assert r.exit_code == 1 and message in r.stderr, (case, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, case
    assert mine.read_text() == "keep me" and not (tmp_path / "report-3.html").exists()
    r = _inspect("--checkpoint", run, "--out", "val.html", "--unit", "1:c:3", "--length", "400")
    assert r.exit_code == 0, r.stderr  # the run's validation split
    data = json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)'
                                r"</script>", (tmp_path / "val.html").read_text(), re.S)[1])
    assert data["start_unit"] == {"layer": 0, "name": "c", "unit": 3} and data["chars"] == 400


# ----- the page in a real browser (the `browser` fixture: conftest.py) ----------------------
def test_the_report_works_in_a_real_browser(lm, small_text, tmp_path, browser):
    split = lm.encode(small_text[:4000] + '\n"quoted (bracketed) text"\n')
    page_html, data = build_report(lm, split.tokens, InspectConfig(length=5000, gates=True),
                                   "text")
    assert {s["name"] for s in data["series"]} == set(SERIES["lstm"])
    path = tmp_path / "report.html"
    path.write_text(page_html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
    assert requests == [path.as_uri()]  # nothing fetched: everything is inlined
    assert page.locator("#text span").count() == len(data["symbols"])

    # Hovering a character shows the top-5 guesses, their probabilities descending.
    page.hover("#text span[data-i='60']")
    assert page.is_visible("#tip")
    rows = page.locator("#tip tr")
    assert rows.count() in (5, 6)  # the five, and the actual symbol if it is not among them
    shown = [float(t.rstrip("%")) for t in page.locator("#tip tr td:nth-child(3)").all_inner_texts()][:5]
    assert shown == sorted(shown, reverse=True) and 0 < sum(shown) <= 100.5

    # Choosing a unit recolours the text by its activation.
    def colours():
        return page.evaluate("() => [...document.querySelectorAll('#text span')].slice(0, 400)"
                             ".map(s => s.style.backgroundColor)")
    surprisal = colours()
    page.click("#tab-units")
    page.fill("#unit", "1")
    first = colours()
    page.fill("#unit", "2")
    second = colours()
    assert surprisal != first != second and len(set(second)) > 5
    page.fill("#unit", str(lm.model.config.hidden_dim))  # out of range: said, nothing changes
    assert "from 0 to" in page.inner_text("#unit-error") and colours() == second
    page.click("#interpretable tbody tr >> nth=0")
    top = data["interpretable"][0]
    assert page.input_value("#unit") == str(top["unit"]) and colours() != second

    # Selecting a stretch of text lists the units on across it, and where they fire.
    page.evaluate("""() => { const s = document.querySelectorAll('#text span');
      const r = document.createRange(); r.setStart(s[200].firstChild, 0);
      r.setEnd(s[215].firstChild, 1); const sel = getSelection(); sel.removeAllRanges();
      sel.addRange(r); document.getElementById('text').dispatchEvent(
        new MouseEvent('mouseup', {bubbles: true})); }""")
    assert page.locator("#pattern-units li").count() == 10
    assert "200\u2013215" in page.inner_text("#pattern")
    page.click("#pattern-units li >> nth=0")
    assert page.is_visible("#unit-controls")
    # A gate's activation, chosen by series: the options list every series of the layer.
    assert page.locator("#series option").count() == len(SERIES["lstm"])
    page.select_option("#series", "f")
    page.fill("#unit", "0")
    gate = colours()
    assert all(c.startswith("rgba(67, 160, 71") for c in gate[1:])  # the gates' green scale

    # Gate statistics: one scatter per gate, a dot per unit and layer.
    assert page.locator("#gates svg").count() == 3
    assert page.locator("#gates svg >> nth=0").locator("circle").count() == \
        lm.model.config.hidden_dim * lm.model.config.num_layers
    page.screenshot(path=str(tmp_path / "report.png"))
    assert errors == []


def test_a_cell_without_gates_says_so_in_the_browser(tmp_path, small_corpus, tiny_options,
                                                     browser):
    build_trainer(small_corpus, out=tmp_path / "rnn", **tiny_options(cell="rnn")).run()
    lm = charlm.load(tmp_path / "rnn")
    page_html, _ = build_report(lm, lm.encode("To be, or not to be.").tokens, InspectConfig(),
                                "text")
    (tmp_path / "r.html").write_text(page_html, encoding="utf-8")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "r.html").as_uri())
    page.wait_for_selector("body[data-ready=yes]")
    assert "has no gates" in page.inner_text("#gates") and errors == []


def test_unknown_characters_are_not_scored_as_in_evaluation(lm, small_text):
    text = small_text[:800] + " \u263a\u263a " + small_text[800:1200]  # the model never saw it
    split = lm.encode(text)
    _, data = build_report(lm, split.tokens, InspectConfig(length=5000), "text")
    exact = lm.evaluate(split, lanes=1)
    assert data["unknown"] == 2 and exact["unknown"] == 2
    assert data["chars"] == exact["chars"] and data["bpc"] == pytest.approx(exact["bpc"], abs=1e-4)
    assert data["bits"].count(None) == 2


def test_gates_per_symbol_only_when_asked(lm, small_text):
    split = lm.encode(small_text[:500])
    _, plain = build_report(lm, split.tokens, InspectConfig(), "text")
    _, full = build_report(lm, split.tokens, InspectConfig(gates=True), "text")
    assert {s["name"] for s in plain["series"]} == {"h", "c"}
    assert {s["name"] for s in full["series"]} == set(SERIES["lstm"])
    assert plain["gates"] == full["gates"] and len(plain["gates"]) == 3  # statistics always



def test_markup_in_the_text_cannot_break_the_page(lm):
    from charlm.report.page import render_page

    text = 'a <!-- b <script>alert(1)</script> c </script> "\u2028" d'
    page = render_page({"symbols": [text]}, "t</title><b>")
    data = page[page.index('type="application/json">') + 24:page.rindex("</script>\n<script>")]
    assert "<" not in data and json.loads(data) == {"symbols": [text]}
    assert "t&lt;/title&gt;&lt;b&gt;" in page


def test_a_baselines_report_works_in_a_real_browser(tmp_path, small_corpus, small_text, browser):
    """An n-gram has no units: its report has the surprisal view alone and says why; an HMM's
    units are its states."""
    for name, args in (("ngram", ["--order", "4"]), ("hmm", ["--states", "6",
                                                               "--max-iterations", "2"])):
        made = runner.invoke(app, ["baseline", name, str(small_corpus), *args, "--out",
                                   str(tmp_path / name)])
        assert made.exit_code == 0, made.output
        lm = charlm.load(tmp_path / name)
        page_html, data = build_report(lm, lm.encode(small_text[:1500]).tokens,
                                       InspectConfig(length=1500), "text")
        path = tmp_path / f"{name}.html"
        path.write_text(page_html, encoding="utf-8")
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
        page.hover("#text span[data-i='50']")
        assert page.is_visible("#tip") and page.locator("#tip tr").count() >= 5
        if name == "ngram":
            assert not page.is_visible("#tab-units") and "no units" in page.inner_text("#gates")
        else:
            page.click("#tab-units")
            assert page.locator("#unit-controls").is_visible()
        assert errors == [], errors
        page.close()
