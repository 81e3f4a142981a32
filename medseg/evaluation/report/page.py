"""The report page: inline CSS, a tiny vanilla-JS table sorter, header, contents and sections.

Nothing is loaded from the network (no CDN scripts, fonts or images): the page
is one file that opens the same offline, in an e-mail attachment or an archive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medseg.evaluation.report.html import esc

CSS = """
:root { --fg: #1d2430; --muted: #5b6678; --line: #d9dee7; --bg: #ffffff; --band: #f4f6fa; --accent: #2357a6; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #16243a; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; word-break: break-all; }
header .meta { color: #c7d2e4; font-size: 13px; }
nav { position: sticky; top: 0; z-index: 2; background: var(--band); border-bottom: 1px solid var(--line);
      padding: 6px 32px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; white-space: nowrap; }
main { padding: 8px 32px 48px; max-width: 1400px; }
section { border-bottom: 1px solid var(--line); padding: 12px 0 20px; }
h2 { font-size: 20px; margin: 12px 0 2px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.how { color: var(--muted); margin: 0 0 10px; font-size: 13px; }
p.caption { color: var(--muted); font-size: 12px; margin: 2px 0 8px; }
p.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 10px; margin: 8px 0; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 8px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
thead th { background: var(--band); }
table.kv th { background: var(--band); font-weight: 600; white-space: nowrap; }
table.kv td { max-width: 560px; overflow-wrap: anywhere; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable thead th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable thead th::after { content: " \\2195"; color: #9aa4b5; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--accent); }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; color: var(--accent); }
table.sortable tbody tr:nth-child(even) { background: #fafbfd; }
.scroll { overflow: auto; max-height: 560px; border: 1px solid var(--line); display: inline-block; max-width: 100%; }
.scroll table { margin: 0; }
.scroll thead th { position: sticky; top: 0; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.cols { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; border: 1px solid var(--line); }
figcaption { font-size: 12px; color: var(--muted); max-width: 520px; }
img.overlay { image-rendering: pixelated; }
.case { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; background: #fcfcfd; }
.case h4 { margin: 0 0 6px; font-size: 14px; word-break: break-all; }
.case .views { display: flex; gap: 10px; flex-wrap: wrap; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #777; vertical-align: -1px; margin-right: 4px; }
.legend { font-size: 13px; margin: 4px 0 10px; }
.legend span.item { margin-right: 14px; white-space: nowrap; }
.glance { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.25fr); gap: 32px; align-items: start; }
.glance table { max-width: 100%; }
.glance h3 { margin-top: 4px; }
.tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.tile { border: 1px solid var(--line); border-radius: 4px; padding: 4px; background: #fcfcfd; font-size: 11px; width: 160px; }
.tile.flagged { border-color: #d9534f; }
.tile img { display: block; max-width: 150px; max-height: 150px; margin: 0 auto; cursor: zoom-in; }
.tile-label { overflow-wrap: anywhere; margin-top: 2px; }
.flag { color: #fff; background: #d9534f; border-radius: 3px; padding: 0 4px; }
figure img.overlay { cursor: zoom-in; }
#zoom { position: fixed; inset: 0; z-index: 10; background: rgba(0, 0, 0, 0.85); display: flex; align-items: center;
        justify-content: center; cursor: zoom-out; }
#zoom[hidden] { display: none; }
#zoom img { max-width: 96vw; max-height: 96vh; image-rendering: pixelated; background: #fff; }
@media print {
  nav, #zoom { display: none !important; }
  header { background: none; color: #000; border-bottom: 2px solid #000; }
  header .meta { color: #333; }
  main { max-width: none; padding: 0; }
  .scroll { max-height: none; overflow: visible; border: 0; }
  .case, .tile, figure, tr { break-inside: avoid; }
  a { color: inherit; }
}
"""

# Sorts a table.sortable by the clicked column; a second click reverses. Numbers by value
# (data-v), text in natural order (case2 before case10); empty values last in both directions; ties keep their order.
JS = """
(function () {
  function value(td, numeric) {
    if (!numeric) { return td.textContent; }
    var v = parseFloat(td.getAttribute('data-v'));
    return isNaN(v) ? null : v;
  }
  function sortBy(table, th, col) {
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    var numeric = th.getAttribute('data-type') === 'num';
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (r, i) { return [value(r.cells[col], numeric), i, r]; });
    rows.sort(function (a, b) {
      if (a[0] === null || b[0] === null) { return a[0] === b[0] ? a[1] - b[1] : (a[0] === null ? 1 : -1); }
      var d = numeric ? (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0) : String(a[0]).localeCompare(String(b[0]), undefined, {numeric: true});
      return (asc ? d : -d) || a[1] - b[1];
    });
    rows.forEach(function (r) { body.appendChild(r[2]); });
  }
  var zoom = document.getElementById('zoom');
  document.addEventListener('click', function (e) {
    var t = e.target;
    if (t.tagName === 'IMG' && t.classList.contains('overlay') && zoom) {
      var big = zoom.querySelector('img') || zoom.appendChild(document.createElement('img'));
      big.src = t.src; big.alt = t.alt; zoom.hidden = false;
    } else if (zoom && !zoom.hidden && zoom.contains(t)) { zoom.hidden = true; }
  });
  document.addEventListener('keydown', function (e) { if (e.key === 'Escape' && zoom) { zoom.hidden = true; } });
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener('click', function () { sortBy(table, th, col); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


@dataclass
class Section:
    """One part of the report: ``ident`` is its HTML id (and anchor), ``how`` a one-line reading guide."""

    ident: str
    title: str
    how: str
    body: str


def render_page(title: str, meta: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    nav = "".join(f'<a href="#{esc(s.ident)}">{esc(s.title)}</a>' for s in sections)
    parts = [
        f'<section id="{esc(s.ident)}"><h2>{esc(s.title)}</h2><p class="how">{esc(s.how)}</p>{s.body}</section>'
        for s in sections
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><div class="meta">{" · ".join(esc(m) for m in meta)}</div></header>'
        f"<nav>{nav}</nav><main>{''.join(parts)}</main>"
        '<div id="zoom" hidden></div>'
        f"<script>{JS}</script></body></html>\n"
    )
