"""HTML for reports and comparisons: one page, inline CSS and images, no scripts.

Everything user-controlled (class names, paths, parameters) goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardlearn.metrics.report import Comparison, Report

__all__ = ["render_comparison", "render_report"]

# Tables longer than this are cut with a note: a 10,000-class table helps nobody.
MAX_TABLE_ROWS = 200

CSS = """
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; background: #f5f7fa; color: #1f2933; }
header { background: #243b53; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #bcccdc; font-size: 13px; }
main { padding: 20px 32px 32px 32px; max-width: 1280px; }
h2 { font-size: 17px; margin: 26px 0 10px 0; color: #243b53; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #d9e2ec; border-radius: 6px; padding: 10px 12px;
        flex: 1 1 104px; }
.card .name { font-size: 12px; color: #627d98; }
.card .value { font-size: 22px; font-weight: 600; margin-top: 2px; }
.card .note { font-size: 11px; color: #829ab1; margin-top: 2px; }
.plots { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid #d9e2ec; border-radius: 6px;
         padding: 8px; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #627d98; }
table { border-collapse: collapse; background: #fff; font-size: 13px; }
th, td { border: 1px solid #d9e2ec; padding: 4px 10px; text-align: right; }
th { background: #f0f4f8; }
td.text, th.text { text-align: left; }
.summary { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 4px 14px; margin: 0;
     background: #fff; border: 1px solid #d9e2ec; border-radius: 6px; padding: 10px 14px;
     font-size: 13px; }
dt { color: #627d98; } dd { margin: 0; overflow-wrap: anywhere; }
.notes { font-size: 12px; color: #627d98; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _page(title: str, subtitle: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1><p>{subtitle}</p></header>\n<main>\n{body}\n</main>\n"
        "</body>\n</html>\n"
    )


def _table(headers: list[str], rows: Iterable[list[Any]], text_columns: int = 1) -> str:
    head = "".join(
        f'<th class="text">{_e(h)}</th>' if i < text_columns else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    lines = []
    for count, row in enumerate(rows):
        if count == MAX_TABLE_ROWS:
            lines.append(
                f'<tr><td class="text" colspan="{len(headers)}">… more rows in the JSON</td></tr>'
            )
            break
        cells = "".join(
            f'<td class="text">{_e(v)}</td>' if i < text_columns else f"<td>{_number(v)}</td>"
            for i, v in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _definitions(items: Mapping[str, Any]) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_plain(v))}</dd>" for k, v in items.items())
    return f"<dl>{rows}</dl>"


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


def _cards(report: Report) -> str:
    from shardlearn.metrics.report import HEADLINE

    metrics = report.metrics
    cards = []
    for key, name in HEADLINE:
        note = ""
        if key == "accuracy":
            low, high = metrics["accuracy_interval_95"]
            note = f"95% CI {_number(low, 3)} – {_number(high, 3)}"
        elif key == "expected_calibration_error":
            note = "top label, 10 bins"
        elif key in ("roc_auc", "pr_auc"):
            bound = metrics[f"{key}_error_bound"]
            note = "exact" if bound == 0 else f"± {bound:.1e} (binned)"
            if len(report.classes) > 2:
                note = f"macro one-vs-rest, {note}"
        cards.append(
            f'<div class="card"><div class="name">{_e(name)}</div>'
            f'<div class="value">{_number(metrics[key])}</div>'
            f'<div class="note">{_e(note)}</div></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _count(value: float) -> Any:
    """A weight that is a whole number (no sample weights) shown as an int."""
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def _average_area(report: Report, key: str, average: str) -> float | None:
    """The macro / weighted area over classes (None for micro, which is not computed)."""
    if average == "weighted":
        return report.metrics[f"{key}_weighted"]
    if average == "macro":
        values = [row[key] for row in report.metrics["per_class"]]
        values = [v for v in values if v is not None and not math.isnan(v)]
        return sum(values) / len(values) if values else None
    return None


def _per_class(report: Report) -> str:
    rows = [
        [
            row["class"],
            _count(row["support"]),
            row["precision"],
            row["recall"],
            row["f1"],
            row["roc_auc"],
            row["pr_auc"],
        ]
        for row in report.metrics["per_class"]
    ]
    headers = ["class", "support", "precision", "recall", "F1", "ROC-AUC", "PR-AUC"]
    averages = []
    for average in ("micro", "macro", "weighted"):
        m = report.metrics
        averages.append(
            [
                f"{average} average",
                _count(m["weight"]),
                m[f"precision_{average}"],
                m[f"recall_{average}"],
                m[f"f1_{average}"],
                _average_area(report, "roc_auc", average),
                _average_area(report, "pr_auc", average),
            ]
        )
    return _table(headers, [*rows, *averages])


def _evaluation(report: Report) -> str:
    info = {k: v for k, v in report.evaluation.items() if k != "per_shard"}
    info["rows"] = report.metrics["rows"]
    text = _definitions(info)
    shards = report.evaluation.get("per_shard")
    if shards:
        rows = [[s["shard"], s["rows"], s["accuracy"]] for s in shards]
        text += "<h2>Per shard</h2>" + _table(["shard", "rows", "accuracy"], rows)
    return text


def render_report(report: Report) -> str:
    """The HTML page of one report."""
    figures = report.figures()
    captions = {
        "confusion": "Rows: true class; colour: share of the row; numbers: weighted counts.",
        "roc": "One-vs-rest ROC curves (largest classes when there are many).",
        "pr": "Precision-recall curves; AP is sklearn's step-wise average precision.",
        "calibration": "Observed frequency against mean predicted probability per bin.",
    }
    plots = "".join(
        f"<figure>{_img(png, name)}<figcaption>{_e(captions[name])}</figcaption></figure>"
        for name, png in figures.items()
    )
    metrics = report.metrics
    exact = metrics["score_histogram_exact"]
    notes = (
        "ROC-AUC and PR-AUC are exact (every distinct score kept)."
        if exact
        else f"Scores were binned ({report.accumulator.scores.bins} bins per class); the AUC "
        f"error bounds are ± {metrics['roc_auc_error_bound']:.1e} (ROC) and "
        f"± {metrics['pr_auc_error_bound']:.1e} (PR)."
    )
    body = (
        f"<h2>Summary</h2>{_cards(report)}"
        f'<h2>Plots</h2><div class="plots">{plots}</div>'
        f"<h2>Per class</h2>{_per_class(report)}"
        '<h2>Dataset and model</h2><div class="summary">'
        f"{_definitions(report.dataset or {'dataset': '—'})}"
        f"{_definitions(report.model or {'model': '—'})}</div>"
        f"<h2>Evaluation</h2>{_evaluation(report)}"
        f'<p class="notes">{_e(notes)} Predicted class = highest probability. '
        "Definitions follow sklearn.metrics.</p>"
    )
    where = report.dataset.get("uri", "")
    split = report.dataset.get("split", "")
    subtitle = " · ".join(
        _e(part)
        for part in (
            f"{where} [{split}]" if where else "",
            f"{metrics['rows']:,} rows",
            report.created,
        )
        if part
    )
    return _page(report.title, subtitle, body)


def render_comparison(comparison: Comparison) -> str:
    """The HTML page of a leaderboard with its comparison plot."""
    from shardlearn.metrics.report import LEADERBOARD

    headers = ["rank", "model", *LEADERBOARD]
    rows = [[row["rank"], row["model"], *(row[m] for m in LEADERBOARD)] for row in comparison.rows]
    body = (
        f"<h2>Leaderboard (by {_e(comparison.sort_by)})</h2>{_table(headers, rows, text_columns=2)}"
        f"<h2>Comparison</h2><figure>{_img(comparison.plot_png(), 'comparison')}</figure>"
    )
    return _page("Model comparison", f"{len(rows)} models", body)
