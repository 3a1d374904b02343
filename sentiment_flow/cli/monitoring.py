"""`monitor`: is the version behind an alias still fine? Exit 0 when every check holds, 3 when one alerts."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sentiment_flow.cli.group import cli, config_options, user_errors
from sentiment_flow.config import MONITORING_EXPERIMENT, MonitorConfig
from sentiment_flow.errors import ALERT_EXIT_CODE


@cli.command("monitor")
@click.argument("model_name")
@click.option(
    "--experiment-name",
    default="",
    help=f"MLflow experiment of the monitoring run [default: {MONITORING_EXPERIMENT}]; under `mlflow run`, the "
    "run is the one it created, in the experiment it chose.",
)
@config_options(MonitorConfig)
@user_errors
def monitor_command(model_name: str, experiment_name: str, **options) -> None:
    """Check the scoring runs of MODEL_NAME's version behind --alias since --since against its training: drift
    (PSI), a label-free macro-F1 estimate (CBPE) and, with gold labels, the realized one. Records one run with an
    HTML report. Exit 0 every check holds, 3 an alert, 2 bad input."""
    from sentiment_flow.monitoring import checks, monitor

    result = monitor(model_name, MonitorConfig(**options), experiment_name)
    out = Console()
    table = Table(title=f"{escape(model_name)} v{result.version}: {len(result.scoring_runs)} scoring run(s), all runs")
    for column in ("check", "statistic", "value", "rows", "threshold", "status"):
        table.add_column(column)
    for c in result.checks:
        if c.scope == checks.ALL_RUNS:
            value = "-" if c.value is None else f"{c.value:.4f}" + (f" ± {c.std:.4f}" if c.std is not None else "")
            table.add_row(c.check, c.statistic, value, f"{c.rows:,}", c.threshold, escape(c.status))
    if result.scoring_runs:
        out.print(table)
    alerts = result.alerts
    measured = [c for c in result.checks if c.scope == checks.ALL_RUNS and c.status in (checks.OK, checks.ALERT)]
    if not result.scoring_runs:
        verdict = f"No scoring runs of {model_name} version {result.version} since {options['since']}: nothing to check"
    elif alerts:
        where = sorted({c.check for c in alerts})
        runs = len({c.scope for c in alerts if c.scope != checks.ALL_RUNS})
        verdict = f"ALERT: {', '.join(where)} crossed a threshold ({runs} run(s) and/or all runs together)"
    elif not measured:
        verdict = f"Nothing measured: {checks.TOO_FEW} or no baseline (see the table); no alert"
    else:
        verdict = "OK: every check holds"
    out.print(f"{verdict}. Report: monitoring run {result.run_id} (report.html)", markup=False, highlight=False)
    sys.exit(ALERT_EXIT_CODE if alerts else 0)
