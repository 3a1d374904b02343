"""The monitoring run's report: PNGs (over time, and all runs against training) and one self-contained HTML page
holding them with every check's number, statistic, rows and threshold, so each figure can be checked."""

from __future__ import annotations

import base64
import html
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import numpy as np

from sentiment_flow.config import LABELS
from sentiment_flow.monitoring import checks, drift
from sentiment_flow.monitoring import probabilities as P

PSI_CHECKS = ("class_mix", "token_length", "confidence")
REPORT_ARTIFACT = "report.html"


def log_report(result, base: checks.Baseline) -> None:
    """Log the plots (plots/*.png) and the report (monitor.REPORT_ARTIFACT) of a MonitorResult to the active run."""
    figures = {}
    if result.scoring_runs:
        figures["over_time.png"] = _over_time(result)
        figures.update(_against_training(result, base))
    images = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, figure in figures.items():  # rendered once: the PNG artifact and the page's inline image
            path = Path(folder, name)
            figure.savefig(path, format="png")
            images[name] = base64.b64encode(path.read_bytes()).decode()
        mlflow.log_artifacts(folder, "plots")
    mlflow.log_text(_html(result, images), REPORT_ARTIFACT)


def _value(result, scope: str, check: str) -> tuple[float, float]:
    """A check's value and std for one scope (NaN where it has none)."""
    for c in result.checks:
        if c.scope == scope and c.check == check:
            return (np.nan if c.value is None else c.value), (np.nan if c.std is None else c.std)
    return np.nan, np.nan


def _over_time(result):
    from sentiment_flow import plots

    ids = [r.run_id for r in result.scoring_runs]
    times = [_time(r.start_ms) for r in result.scoring_runs]
    rows = [float(np.sum(r.observed.label_counts)) for r in result.scoring_runs]
    series = {name: [_value(result, i, name)[0] for i in ids] for name in PSI_CHECKS}
    thresholds = {name: float(_threshold(result, name)) for name in PSI_CHECKS}
    estimated = [_value(result, i, "estimated_f1") for i in ids]
    realized = [r.observed.realized_f1 if r.observed.realized_f1 is not None else np.nan for r in result.scoring_runs]
    reference = _reference(result)
    estimate = {
        "estimated": ([e[0] for e in estimated], [e[1] for e in estimated]),
        "realized": (realized,),
        "reference": (np.nan if reference is None else reference,),
    }
    return plots.over_time(times, rows, series, thresholds, estimate)


def _against_training(result, base: checks.Baseline) -> dict:
    """All runs together against the training test split: one bar chart per PSI check that has both sides."""
    from sentiment_flow import plots

    seen = checks.combined([r.observed for r in result.scoring_runs])
    edges = [str(edge) for edge in drift.LENGTH_EDGES[:-1]] + [f"{drift.LENGTH_EDGES[-1]}+"]
    confidence = [f"{i / P.CONFIDENCE_BINS:.2f}" for i in range(P.CONFIDENCE_BINS)]
    sides = {
        "class_mix": (list(LABELS), base.predicted_counts, seen.label_counts),
        "token_length": (
            edges,
            None if base.token_length_counts is None else drift.length_bins(base.token_length_counts),
            None if seen.token_length_counts is None else drift.length_bins(seen.token_length_counts),
        ),
        "confidence": (
            confidence,
            None if base.stats is None else base.stats["confidence_counts"],
            None if seen.stats is None else seen.stats["confidence_counts"],
        ),
    }
    figures = {}
    for name, (bins, expected, actual) in sides.items():
        value = _value(result, checks.ALL_RUNS, name)[0]
        if expected is None or actual is None or np.isnan(value):
            continue
        title = f"{name.replace('_', ' ')}: all runs ({int(np.sum(actual)):,} rows) vs training test split"
        figures[f"{name}_drift.png"] = plots.compare_shares(bins, expected, actual, title, value)
    return figures


def _threshold(result, name: str) -> str:
    for c in result.checks:
        if c.check == name:
            return c.threshold.removeprefix("<= ")
    return "nan"


def _reference(result) -> float | None:
    for c in result.checks:
        if c.check == "estimated_f1" and "(test " in c.threshold:
            return float(c.threshold.split("(test ", 1)[1].split(" ", 1)[0])
    return None


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _html(result, images: dict[str, str]) -> str:
    """The report page: verdict, the version, the checks over all runs and per run, and the plots inline."""
    e = html.escape
    verdict = f"ALERT: {len(result.alerts)} check(s) crossed a threshold" if result.alerts else "OK: every check holds"
    starts = {r.run_id: _time(r.start_ms) for r in result.scoring_runs}
    names = {r.run_id: r.run_name for r in result.scoring_runs}
    head = "<tr><th>scope</th><th>check</th><th>statistic</th><th>value</th><th>rows</th><th>threshold</th>"
    head += "<th>status</th><th>note</th></tr>"
    lines = []
    for c in sorted(result.checks, key=lambda c: (c.scope != checks.ALL_RUNS, starts.get(c.scope, ""))):
        scope = checks.ALL_RUNS if c.scope == checks.ALL_RUNS else f"{starts[c.scope]} {names[c.scope]} ({c.scope[:8]})"
        value = "-" if c.value is None else f"{c.value:.4f}"
        cells = (scope, c.check, c.statistic, value, f"{c.rows:,}", c.threshold, c.status, c.note)
        style = ' class="alert"' if c.status == checks.ALERT else ""
        lines.append(f"<tr{style}>" + "".join(f"<td>{e(str(cell))}</td>" for cell in cells) + "</tr>")
    plots = "".join(
        f'<h3>{e(name)}</h3><img alt="{e(name)}" src="data:image/png;base64,{data}">' for name, data in images.items()
    )
    title = f"Monitoring {result.model_name} version {result.version}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}
table{{border-collapse:collapse}}tr.alert{{background:#fdd}}</style></head><body>
<h1>{e(title)}</h1>
<p><b>{e(verdict)}</b></p>
<p>Model <code>{e(result.model_name)}</code>, version <b>{e(result.version)}</b>; {len(result.scoring_runs)} scoring
run(s); monitoring run <code>{e(result.run_id)}</code>. Checks below {drift.MIN_DRIFT_ROWS} rows say "not enough
rows" instead of a number. docs/monitoring.md explains each statistic.</p>
<table>{head}{"".join(lines)}</table>
{plots}
</body></html>
"""
