"""index.html: the report for a browser, from template.html beside this file."""
from __future__ import annotations

import html
from pathlib import Path
from string import Template

from .tables import BEST, EQUIVALENT_MARK, UNDECIDED_MARK, marker

TEMPLATE = Path(__file__).with_name("template.html")


def table_html(head: list[str], body: list[list[str]], table_id: str, classes=None) -> str:
    rows = []
    for i, row in enumerate(body):
        cells = [f"<th>{html.escape(row[0])}</th>"]
        for j, value in enumerate(row[1:], start=1):
            cls = classes(i, j) if classes else ""
            attribute = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attribute}>{html.escape(value)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table id="{table_id}"><tr>{header}</tr>{"".join(rows)}</table>'


def results_classes(analysis):
    t = analysis.table

    def classes(i, j):
        s, c = t.series[i], t.columns[j - 1]
        mark = marker(analysis, s, c)
        kinds = {BEST: "best", EQUIVALENT_MARK: "equivalent", UNDECIDED_MARK: "undecided"}
        return kinds.get(mark) or ("problem" if t.cells[s, c].problems else "")
    return classes


def write_html(path: Path, title: str, findings: list[str], method: str, results: list[str], comparisons: str,
               cost_note: str, cost: str, convergence: list[str], runs, why: str = "", why_figures=(),
               why_note: str = "", legend: str = "", plan: str = "", aggregate_note: str = "",
               aggregate: str = "") -> None:
    problems = "".join(
        f"<li>{html.escape(r.label)} batch {html.escape(str(r.config.get('data.batch_size')))} seed {r.seed}: "
        f"<b>{html.escape(r.status)}</b>{' — ' + html.escape(r.error) if r.error else ''} "
        f"<code>{html.escape(str(r.path))}</code></li>" for r in runs if r.status != "completed")
    images = "".join(f'<img id="{Path(p).stem}" src="{html.escape(p)}" alt="validation error and training loss">'
                     for p in convergence)
    path.write_text(Template(TEMPLATE.read_text()).substitute(
        title=html.escape(title), findings="".join(f"<li>{html.escape(f)}</li>" for f in findings),
        method=html.escape(method), legend=html.escape(legend), results="".join(results), comparisons=comparisons,
        plan=f"<h2>Plan</h2><pre id=\"plan\">{html.escape(plan)}</pre>" if plan else "",
        aggregate_note=html.escape(aggregate_note), aggregate=aggregate,
        cost_note=html.escape(cost_note), cost=cost, convergence=images, problems=problems or "<li>none</li>",
        why=(f"<h2>Why</h2><p>{html.escape(why_note)}</p>{why}"
             + "".join(f'<img id="{Path(p).stem}" src="{html.escape(p)}" alt="why">' for p in why_figures))
        if why_note else ""))
