"use strict";
// charlm inspect: the report's behaviour. All data is in #report-data (no network access).
(async function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const T = D.symbols.length;
  const $ = (id) => document.getElementById(id);
  const textEl = $("text"), tip = $("tip"), status = $("status");
  let mode = "surprisal", current = null, spans = [];

  // ----- the series: levels 0..15, unit-major, two a byte, deflated ----------------------
  async function inflate(b64) {
    const s = atob(b64), raw = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) raw[i] = s.charCodeAt(i);
    const stream = new Blob([raw]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  // Decoded before any control is wired up: nothing can be clicked before the data is there.
  const series = [];
  for (const s of D.series) series.push(Object.assign({}, s, { q: await inflate(s.data), data: null }));
  const byKey = {};
  series.forEach((s) => { byKey[s.layer + "/" + s.name] = s; });
  const top = D.levels - 1;
  function level(s, unit, t) {  // 0..1 over the unit's own range
    const i = unit * T + t, b = s.q[i >> 1];
    return ((i & 1) ? (b & 15) : (b >> 4)) / top;
  }
  function value(s, unit, t) {
    return s.unit_lo[unit] + level(s, unit, t) * (s.unit_hi[unit] - s.unit_lo[unit]);
  }

  // ----- the text ------------------------------------------------------------------------
  const chars = D.symbols.map((sym) => sym.length);
  const cumBits = new Float64Array(T), cumChars = new Float64Array(T);
  for (let t = 1; t < T; t++) {  // unknown symbols (bits null) are not scored, as in eval
    const scored = D.bits[t - 1] !== null;
    cumBits[t] = cumBits[t - 1] + (scored ? D.bits[t - 1] : 0);
    cumChars[t] = cumChars[t - 1] + (scored ? chars[t] : 0);
  }
  function shown(sym, t) {
    if (D.eod[t]) return "\u00b6\n";
    return sym.replace(/\n/g, "\u21b5\n").replace(/\t/g, "\u21e5\t");
  }
  (function build() {
    const frag = document.createDocumentFragment();
    for (let t = 0; t < T; t++) {
      const el = document.createElement("span");
      el.textContent = shown(D.symbols[t], t);
      el.dataset.i = t;
      if (D.eod[t]) el.className = "eod";
      frag.appendChild(el);
      spans.push(el);
    }
    textEl.appendChild(frag);
  })();

  function surprisalColour(t) {
    if (t === 0) return "";
    if (D.bits[t - 1] === null) return "#cfd8dc";
    const a = Math.min(D.bits[t - 1] / Math.max(chars[t], 1) / 8, 1);
    return "rgba(229,57,53," + a.toFixed(3) + ")";
  }
  function unitColour(s, unit, t) {
    if (s.lo < 0) {
      const v = value(s, unit, t) / Math.max(-s.lo, s.hi);
      return v < 0 ? "rgba(30,136,229," + (-v).toFixed(3) + ")"
                   : "rgba(229,57,53," + v.toFixed(3) + ")";
    }
    return "rgba(67,160,71," + ((value(s, unit, t) - s.lo) / (s.hi - s.lo)).toFixed(3) + ")";
  }
  function recolour() {
    if (mode === "surprisal") {
      for (let t = 0; t < T; t++) spans[t].style.backgroundColor = surprisalColour(t);
      $("legend").textContent = "";
      return;
    }
    if (!current) return;
    const s = byKey[current.layer + "/" + current.name];
    for (let t = 0; t < T; t++) spans[t].style.backgroundColor = unitColour(s, current.unit, t);
    $("legend").innerHTML = s.lo < 0
      ? "<span class='swatch' style='background:linear-gradient(90deg,#1e88e5,#fff,#e53935)'></span> "
        + s.lo.toFixed(1) + " \u2026 " + s.hi.toFixed(1)
      : "<span class='swatch' style='background:linear-gradient(90deg,#fff,#43a047)'></span> "
        + s.lo.toFixed(1) + " \u2026 " + s.hi.toFixed(2);
  }

  // ----- surprisal and the top guesses -----------------------------------------------------
  function esc(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  function label(id) {
    const s = D.vocab[id];
    return s === null ? "\u00b6 (end)" : JSON.stringify(s).slice(1, -1);
  }
  function showTip(t, x, y) {
    if (t === 0) { tip.hidden = true; return; }
    const k = D.top_k, bits = D.bits[t - 1], actual = D.ids[t];
    const scored = bits !== null;
    let rows = "";
    let listed = false;
    for (let j = 0; j < k; j++) {
      const id = D.top_ids[(t - 1) * k + j], p = D.top_probs[(t - 1) * k + j];
      const mine = id === actual;
      listed = listed || mine;
      rows += "<tr" + (mine ? " class='actual'" : "") + "><td class='sym'>" + esc(label(id))
        + "</td><td><span class='bar' style='width:" + Math.round(p * 80) + "px'></span></td><td>"
        + (100 * p).toFixed(1) + "%</td></tr>";
    }
    if (!listed && scored) {
      rows += "<tr class='actual'><td class='sym'>" + esc(label(actual)) + "</td><td></td><td>"
        + (100 * Math.pow(2, -bits)).toFixed(2) + "%</td></tr>";
    }
    tip.innerHTML = "<div><b>" + esc(label(actual)) + "</b>: " + (scored ? bits.toFixed(2)
      + " bits" : "a character the model never saw (not scored)") + "</div><table>" + rows
      + "</table>";
    tip.hidden = false;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.min(x + 14, window.innerWidth - w - 8) + "px";
    tip.style.top = (y + 18 + h > window.innerHeight ? y - h - 10 : y + 18) + "px";
    status.textContent = "symbol " + t.toLocaleString() + ": "
      + (scored ? bits.toFixed(2) + " bits" : "not scored") + "; running " + (cumBits[t] / Math.max(cumChars[t], 1)).toFixed(3)
      + " bits per character";
    if (mode === "units" && current) {
      const s = byKey[current.layer + "/" + current.name];
      status.textContent += "; " + unitName(current) + " = " + value(s, current.unit, t).toFixed(3);
    }
  }
  function spanOf(node) {
    while (node && node !== textEl) {
      if (node.dataset && node.dataset.i !== undefined) return node;
      node = node.parentNode;
    }
    return null;
  }
  textEl.addEventListener("mouseover", (e) => {
    const el = spanOf(e.target);
    if (el) showTip(+el.dataset.i, e.clientX, e.clientY);
  });
  textEl.addEventListener("mouseleave", () => { tip.hidden = true; });
  textEl.addEventListener("touchstart", (e) => {
    const el = spanOf(e.target), touch = e.touches[0];
    if (el) showTip(+el.dataset.i, touch.clientX, touch.clientY);
  }, { passive: true });

  // ----- the unit view ----------------------------------------------------------------------
  const layerSel = $("layer"), seriesSel = $("series"), unitIn = $("unit"), unitErr = $("unit-error");
  for (let l = 0; l < D.layers; l++) layerSel.add(new Option("layer " + (l + 1), l));
  function fillSeries() {
    const l = +layerSel.value, keep = seriesSel.value;
    seriesSel.innerHTML = "";
    series.filter((s) => s.layer === l).forEach((s) => seriesSel.add(new Option(s.label, s.name)));
    if ([...seriesSel.options].some((o) => o.value === keep)) seriesSel.value = keep;
  }
  function unitName(u) {
    return "layer " + (u.layer + 1) + " " + byKey[u.layer + "/" + u.name].label + " #" + u.unit;
  }
  function chooseFromControls() {
    const s = byKey[layerSel.value + "/" + seriesSel.value];
    const unit = unitIn.value.trim() === "" ? NaN : Number(unitIn.value);
    if (!Number.isInteger(unit) || unit < 0 || unit >= s.units) {
      unitErr.textContent = "unit must be a whole number from 0 to " + (s.units - 1);
      return;
    }
    unitErr.textContent = "";
    current = { layer: s.layer, name: s.name, unit: unit };
    recolour();
  }
  function select(u) {
    setMode("units");
    layerSel.value = u.layer;
    fillSeries();
    seriesSel.value = u.name;
    unitIn.value = u.unit;
    chooseFromControls();
  }
  layerSel.addEventListener("change", () => { fillSeries(); chooseFromControls(); });
  seriesSel.addEventListener("change", chooseFromControls);
  unitIn.addEventListener("input", chooseFromControls);
  function setMode(m) {
    mode = m;
    document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("on", b.dataset.mode === m));
    $("unit-controls").hidden = m !== "units";
    if (m === "units" && !current) chooseFromControls();
    recolour();
  }
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));

  const tbody = $("interpretable").querySelector("tbody");
  if (!D.interpretable.length) {
    tbody.innerHTML = "<tr><td colspan='3'>(no property of this text varies enough)</td></tr>";
  }
  D.interpretable.forEach((u) => {
    const tr = document.createElement("tr");
    tr.innerHTML = "<td>" + esc(u.property) + "</td><td>L" + (u.layer + 1) + " " + u.series
      + " #" + u.unit + "</td><td>" + u.r.toFixed(2) + "</td>";
    tr.addEventListener("click", () => select({ layer: u.layer, name: u.series, unit: u.unit }));
    tbody.appendChild(tr);
  });

  // ----- find units for a pattern ------------------------------------------------------------
  const searched = series.filter((s) => D.pattern_series.indexOf(s.name) >= 0);
  function mean(s, u, a, b) {
    let sum = 0;
    for (let t = a; t <= b; t++) sum += level(s, u, t);
    return sum / (b - a + 1);
  }
  function findUnits(a, b) {
    const w = Math.max(5, b - a + 1), lo = Math.max(0, a - w), hi = Math.min(T - 1, b + w);
    const scored = [];
    searched.forEach((s) => {
      for (let u = 0; u < s.units; u++) {
        const inside = mean(s, u, a, b);
        let around = 0, n = 0;
        for (let t = lo; t <= hi; t++) if (t < a || t > b) { around += level(s, u, t); n++; }
        around = n ? around / n : 0;
        scored.push({ s: s, unit: u, inside: inside, around: around, score: inside - around });
      }
    });
    scored.sort((x, y) => Math.abs(y.score) - Math.abs(x.score));
    return scored.slice(0, 10);
  }
  function matches(top, a, b) {
    const units = top.slice(0, 5), on = new Uint8Array(T), found = [];
    for (let t = 0; t < T; t++) {
      on[t] = units.every((x) => Math.sign(x.score) * (level(x.s, x.unit, t) - (x.inside + x.around) / 2) > 0) ? 1 : 0;
    }
    const minRun = Math.max(1, Math.floor((b - a + 1) / 2));
    for (let t = 0; t < T;) {
      if (!on[t]) { t++; continue; }
      let e = t;
      while (e + 1 < T && on[e + 1]) e++;
      if (e - t + 1 >= minRun && (e < a || t > b)) found.push([t, e]);
      t = e + 1;
    }
    return found.slice(0, 12);
  }
  function snippet(a, b) {
    let s = "";
    for (let t = Math.max(0, a - 8); t <= Math.min(T - 1, b + 8); t++) {
      const sym = D.eod[t] ? "\u00b6" : D.symbols[t].replace(/\n/g, "\u21b5");
      s += t === a ? "[" + sym : t === b ? sym + "]" : sym;
      if (a === b && t === a) s += "]";
    }
    return s;
  }
  function flash(a, b) {
    spans[a].scrollIntoView({ block: "center" });
    for (let t = a; t <= b; t++) spans[t].classList.add("flash");
    setTimeout(() => { for (let t = a; t <= b; t++) spans[t].classList.remove("flash"); }, 1500);
  }
  function patternSearch(a, b) {
    const box = $("pattern");
    if (!searched.length) {
      box.innerHTML = "<p class='note'>This model has no units to search.</p>";
      return;
    }
    const top = findUnits(a, b);
    const list = document.createElement("ul");
    list.id = "pattern-units";
    top.forEach((x) => {
      const li = document.createElement("li");
      li.textContent = "L" + (x.s.layer + 1) + " " + x.s.name + " #" + x.unit + "  "
        + (x.score > 0 ? "on " : "off ") + (x.score > 0 ? "+" : "") + x.score.toFixed(2);
      li.addEventListener("click", () => select({ layer: x.s.layer, name: x.s.name, unit: x.unit }));
      list.appendChild(li);
    });
    const places = document.createElement("ul");
    places.id = "pattern-places";
    const found = matches(top, a, b);
    found.forEach(([s, e]) => {
      const li = document.createElement("li");
      li.textContent = snippet(s, e);
      li.addEventListener("click", () => flash(s, e));
      places.appendChild(li);
    });
    box.innerHTML = "<p class='note'>Selected symbols " + a.toLocaleString() + "\u2013"
      + b.toLocaleString() + ": " + esc(snippet(a, b)) + "</p><p>Units on across it, off around it "
      + "(difference of their mean levels):</p>";
    box.appendChild(list);
    const p = document.createElement("p");
    p.textContent = found.length ? "Where the first five fire together elsewhere:"
                                 : "The first five fire together nowhere else in this text.";
    box.appendChild(p);
    box.appendChild(places);
  }
  function selected() {  // the symbols a selection of the text covers, or null
    const sel = window.getSelection();
    if (!sel || sel.isCollapsed || !sel.rangeCount) return null;
    const range = sel.getRangeAt(0);
    const first = spanOf(range.startContainer), last = spanOf(range.endContainer);
    if (!first || !last) return null;
    let a = +first.dataset.i, b = +last.dataset.i;
    // A range that starts at the very end of a symbol or ends at the very start of one does
    // not take it.
    if (b > a && range.endOffset === 0) b -= 1;
    if (b > a && range.startContainer.nodeType === 3
        && range.startOffset === range.startContainer.length) a += 1;
    return [a, b];
  }
  document.addEventListener("mouseup", () => {  // a drag may end outside the text
    const r = selected();
    if (r) patternSearch(r[0], r[1]);
  });

  // ----- gate statistics ----------------------------------------------------------------------
  (function gates() {
    const box = $("gates");
    if (!D.gates.length) {
      box.innerHTML = "<p class='note'>" + (series.length
        ? "This model (" + esc(D.cell) + ") has no gates; its units are in the Units view."
        : "This model (" + esc(D.cell) + ") has no units: all it remembers is the last few "
          + "symbols.") + "</p>";
      return;
    }
    box.innerHTML = "<p class='note'>Each dot is a unit: the fraction of this text for which its "
      + "gate is below 0.1 (left-saturated) and above 0.9 (right-saturated)."
      + (D.gate_steps ? "" : " (The gates' activations symbol by symbol are in the Units view "
         + "of a report written with --gates.)") + "</p>";
    const names = { i: "input gate", f: "forget gate", o: "output gate", r: "reset gate",
                    z: "update gate" };
    const colours = ["#1e88e5", "#e53935", "#43a047", "#8e24aa", "#fb8c00", "#00897b"];
    const kinds = [...new Set(D.gates.map((g) => g.gate))];
    kinds.forEach((kind) => {
      const size = 150, pad = 24;
      let svg = "<svg width='" + (size + pad + 6) + "' height='" + (size + pad + 14) + "' role='img'>"
        + "<text x='" + (pad + 2) + "' y='10'>" + names[kind] + "</text>"
        + "<rect x='" + pad + "' y='14' width='" + size + "' height='" + size
        + "' fill='none' stroke='#bbb'/>"
        + "<line x1='" + pad + "' y1='" + (14 + size) + "' x2='" + (pad + size) + "' y2='14' stroke='#eee'/>"
        + "<text x='" + pad + "' y='" + (size + 26) + "'>0</text><text x='" + (pad + size - 6)
        + "' y='" + (size + 26) + "'>1</text><text x='" + (pad + size / 2 - 24) + "' y='"
        + (size + 36) + "'>left-saturated</text>"
        + "<text x='4' y='" + (18 + size / 2) + "' transform='rotate(-90 8 " + (14 + size / 2)
        + ")'>right-saturated</text>";
      D.gates.filter((g) => g.gate === kind).forEach((g) => {
        for (let u = 0; u < g.left.length; u++) {
          svg += "<circle cx='" + (pad + g.left[u] * size).toFixed(1) + "' cy='"
            + (14 + size - g.right[u] * size).toFixed(1) + "' r='1.6' fill='" + colours[g.layer % 6]
            + "' fill-opacity='0.55'/>";
        }
      });
      svg += "</svg>";
      const div = document.createElement("div");
      div.className = "gate-plot";
      div.innerHTML = svg;
      box.appendChild(div);
    });
    const key = document.createElement("p");
    key.className = "note";
    key.innerHTML = [...new Set(D.gates.map((g) => g.layer))].map((l) =>
      "<span style='color:" + colours[l % 6] + "'>\u25cf</span> layer " + (l + 1)).join(" &nbsp; ");
    box.appendChild(key);
  })();

  $("summary").textContent = D.summary;
  if (!series.length) $("tab-units").hidden = true;  // an n-gram: surprisal only
  fillSeries();
  if (D.start_unit) select(D.start_unit); else recolour();
  document.body.dataset.ready = "yes";
})();
