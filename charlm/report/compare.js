"use strict";
// charlm compare: the view's behaviour. All data is in #report-data (no network access).
(function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const N = D.chars.length, R = D.runs.length;
  const $ = (id) => document.getElementById(id);
  const textEl = $("text"), tip = $("tip"), status = $("status");
  const selA = $("run-a"), selB = $("run-b");
  const spans = [];
  const fmt = (v) => (v === null || v === undefined ? "\u2013" : v.toFixed(3));

  $("summary").textContent = D.source + ": " + D.total_chars.toLocaleString() +
    " characters, the first " + D.shown.toLocaleString() + " shown";

  D.runs.forEach((r, i) => {
    for (const sel of [selA, selB]) {
      const o = document.createElement("option");
      o.value = i; o.textContent = (i + 1) + ". " + r.name;
      sel.appendChild(o);
    }
  });
  const none = document.createElement("option");
  none.value = -1; none.textContent = "(none: A's own bits)";
  selB.appendChild(none);
  selA.value = 0; selB.value = R > 1 ? 1 : -1;

  (function runsTable() {
    const body = $("runs").tBodies[0];
    D.runs.forEach((r, i) => {
      const tr = body.insertRow();
      tr.insertCell().textContent = (i + 1) + ". " + r.name;
      tr.insertCell().textContent = r.kind;
      const b = tr.insertCell(); b.className = "num"; b.textContent = r.bpc.toFixed(4);
      const c = tr.insertCell(); c.className = "num"; c.textContent = r.chars.toLocaleString();
    });
  })();

  function shown(t) {
    if (D.end[t]) return "\u00b6\n";
    return D.chars[t].replace(/\n/g, "\u21b5\n").replace(/\t/g, "\u21e5\t");
  }
  (function build() {
    const frag = document.createDocumentFragment();
    for (let t = 0; t < N; t++) {
      const el = document.createElement("span");
      el.textContent = shown(t);
      el.dataset.i = t;
      if (D.end[t]) el.className = "eod";
      frag.appendChild(el);
      spans.push(el);
    }
    textEl.appendChild(frag);
  })();

  function colour(t, a, b) {
    const x = D.bits[a][t], y = b >= 0 ? D.bits[b][t] : 0;
    if (x === null || y === null) return "#cfd8dc";
    if (b < 0) return "rgba(229,57,53," + Math.min(x / 8, 1).toFixed(3) + ")";
    const d = Math.max(-1, Math.min(1, (y - x) / 4));  // B worse: red; B better: blue
    return d >= 0 ? "rgba(229,57,53," + d.toFixed(3) + ")"
                  : "rgba(30,136,229," + (-d).toFixed(3) + ")";
  }
  function recolour() {
    const a = +selA.value, b = +selB.value;
    for (let t = 0; t < N; t++) spans[t].style.background = colour(t, a, b);
    $("legend").innerHTML = b >= 0
      ? "B better by 4+ bits <span class=\"diff-legend\"></span> B worse by 4+ bits"
      : "A's bits: 0 <span class=\"swatch\" style=\"background:linear-gradient(to right,#fff," +
        "rgb(229,57,53))\"></span> 8+";
    breakdownTable(a, b);
  }
  function breakdownTable(a, b) {
    const body = $("breakdown").tBodies[0];
    body.innerHTML = "";
    for (const row of D.breakdown) {
      if (!row.count) continue;
      const tr = body.insertRow();
      tr.insertCell().textContent = row.category;
      const cells = [row.count.toLocaleString(), fmt(row.bits[a]),
                     b >= 0 ? fmt(row.bits[b]) : "", ""];
      let diff = null;
      if (b >= 0 && row.bits[a] !== null && row.bits[b] !== null) {
        diff = row.bits[b] - row.bits[a];
        cells[3] = (diff >= 0 ? "+" : "") + diff.toFixed(3);
      }
      cells.forEach((v, k) => {
        const c = tr.insertCell(); c.className = "num"; c.textContent = v;
        if (k === 3 && diff !== null) c.classList.add(diff < 0 ? "better" : "worse");
      });
    }
  }
  selA.addEventListener("change", recolour);
  selB.addEventListener("change", recolour);
  recolour();

  function spanOf(node) {
    while (node && node !== textEl) {
      if (node.dataset && node.dataset.i !== undefined) return +node.dataset.i;
      node = node.parentNode;
    }
    return null;
  }
  function showTip(t, x, y) {
    const what = D.end[t] ? "the end of the document" : JSON.stringify(D.chars[t]);
    let h = "<div>" + what.replace(/</g, "&lt;") + "</div><table>";
    D.runs.forEach((r, i) => {
      h += "<tr><td>" + (i + 1) + ". " + r.name.replace(/</g, "&lt;") + "</td><td>" +
        fmt(D.bits[i][t]) + " bits</td></tr>";
    });
    tip.innerHTML = h + "</table>";
    tip.hidden = false;
    tip.style.left = Math.min(x + 12, window.innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = (y + 16) + "px";
  }
  textEl.addEventListener("mousemove", (e) => {
    const t = spanOf(e.target);
    if (t === null) { tip.hidden = true; return; }
    showTip(t, e.clientX, e.clientY);
  });
  textEl.addEventListener("mouseleave", () => { tip.hidden = true; });
  textEl.addEventListener("click", (e) => {
    const t = spanOf(e.target);
    if (t !== null) showTip(t, e.clientX, e.clientY);
  });

  document.addEventListener("selectionchange", () => {
    const sel = window.getSelection();
    if (!sel || sel.isCollapsed || !textEl.contains(sel.anchorNode)) return;
    const at = (node) => spanOf(node.nodeType === 3 ? node.parentNode : node);
    let lo = at(sel.anchorNode), hi = at(sel.focusNode);
    if (lo === null || hi === null) return;
    if (lo > hi) [lo, hi] = [hi, lo];
    // As the breakdown: the characters every run scores (not the ends of documents).
    const sums = D.runs.map(() => 0);
    let n = 0, chars = 0;
    for (let t = lo; t <= hi; t++) {
      if (D.end[t]) continue;
      chars++;
      if (D.bits.some((row) => row[t] === null)) continue;
      D.bits.forEach((row, i) => { sums[i] += row[t]; });
      n++;
    }
    const parts = sums.map((s, i) => (i + 1) + ". " + (n ? (s / n).toFixed(3) : "\u2013"));
    status.textContent = "selected " + chars + " characters: bits/char " + parts.join(", ");
  });
  document.body.dataset.ready = "yes";
})();
