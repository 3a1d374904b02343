"""`monitor`: read the scoring runs of the version behind an alias, check each and all of them together against
that version's training baseline (checks.py), and record one monitoring run with the checks, plots and an HTML
report; the caller turns an alert into exit code 3."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass

import mlflow
import numpy as np

from sentiment_flow import runs, store
from sentiment_flow.config import LABELS, MONITORING_EXPERIMENT, SCORING_EXPERIMENT, MonitorConfig
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.monitoring import checks, drift, report, vocabulary
from sentiment_flow.monitoring import probabilities as P
from sentiment_flow.monitoring.checks import Check

log = logging.getLogger(__name__)

CHECKS_ARTIFACT = "checks.json"
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
SEARCH_PAGE = 1000  # scoring runs per search request


@dataclass(frozen=True)
class ScoringRun:
    """One scoring run as the monitor reads it."""

    run_id: str
    start_ms: int
    run_name: str
    observed: checks.Observed


@dataclass(frozen=True)
class MonitorResult:
    """What `monitor` found: the version, its scoring runs, every check, and the monitoring run's id."""

    model_name: str
    version: str
    scoring_runs: list[ScoringRun]
    checks: list[Check]
    run_id: str

    @property
    def alerts(self) -> list[Check]:
        return [c for c in self.checks if c.status == checks.ALERT]


def since_seconds(since: str) -> int:
    """Seconds in a `--since` value such as 30m, 12h, 7d or 2w."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", since)
    if not match or int(match.group(1)) == 0:
        raise UserError(f"--since {since!r} is not a duration; use a positive number and a unit, e.g. 7d, 12h, 2w.")
    return int(match.group(1)) * UNITS[match.group(2)]


def monitor(model_name: str, config: MonitorConfig = MonitorConfig(), experiment_name: str = "") -> MonitorResult:
    """Check the scoring runs of models:/MODEL_NAME@ALIAS's version since `config.since` and record one monitoring
    run in `experiment_name` (MONITORING_EXPERIMENT if empty); returns what was found."""
    store.check_store()
    # One artifact download per scoring run: without this, MLflow draws a progress bar for each.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    window = since_seconds(config.since)
    version = store.resolve_version(f"models:/{model_name}@{config.alias}")
    client = mlflow.MlflowClient()
    base = load_baseline(client, version.run_id)
    start_ms = int((time.time() - window) * 1000)
    found = scoring_runs(client, model_name, str(version.version), start_ms)
    results = []
    for run in found:
        results += checks.run_checks(run.run_id, run.observed, base, config)
    if found:
        results += checks.run_checks(checks.ALL_RUNS, checks.combined([r.observed for r in found]), base, config)
    params = {
        "model_name": model_name,
        "alias": config.alias,
        "model_version": str(version.version),
        "model_run_id": version.run_id or "",
        "since": config.since,
        "scoring_runs": str(len(found)),
        **{k: str(v) for k, v in vars(config).items() if k.startswith("max_")},
    }
    # Under `mlflow run` the run is the one it created, in the experiment it chose.
    given = os.environ.get("MLFLOW_RUN_ID")
    experiment_id = None if given else store.experiment_id(experiment_name or MONITORING_EXPERIMENT)
    with runs.run(f"monitor-{model_name}-v{version.version}", experiment_id) as active:
        runs.log_new_params(params)
        alerts = [c for c in results if c.status == checks.ALERT]
        mlflow.set_tags({"verdict": "alert" if alerts else "ok", "alerts": str(len(alerts))})
        mlflow.log_metrics(_window_metrics(results, found))
        mlflow.log_dict({"checks": [c.as_dict() for c in results]}, CHECKS_ARTIFACT)
        result = MonitorResult(model_name, str(version.version), found, results, active.info.run_id)
        report.log_report(result, base)
    return result


def load_baseline(client: mlflow.MlflowClient, run_id: str | None) -> checks.Baseline:
    """The training side of the checks: the version's test split as its training run logged it."""
    reference = drift.load_baseline(drift.baseline_run_id(run_id))
    stats = _load_stats(drift.baseline_run_id(run_id)) if run_id else None
    f1 = None
    if run_id:
        try:
            f1 = client.get_run(run_id).data.metrics.get("test_f1_macro")
        except mlflow.exceptions.MlflowException as exc:
            log.debug("no training run %s: %s", run_id, one_line(exc))
    lengths = None if isinstance(reference, str) else np.asarray(reference["token_length_counts"])
    predicted = None if stats is None else stats["probability_sums"].sum(axis=1)
    known = vocabulary.load(drift.baseline_run_id(run_id))
    words = np.asarray(known["test_counts"]) if known else None
    return checks.Baseline(predicted, stats, lengths, f1, words)


def scoring_runs(client: mlflow.MlflowClient, model_name: str, version: str, start_ms: int) -> list[ScoringRun]:
    """The FINISHED scoring runs of NAME/VERSION started at `start_ms` or later, oldest first."""
    experiment = client.get_experiment_by_name(SCORING_EXPERIMENT)
    if experiment is None:
        return []
    query = (
        f"{store.equals('params.model_name', model_name)} and {store.equals('params.model_version', version)} "
        f"and attributes.start_time >= {start_ms} and attributes.status = 'FINISHED'"
    )
    found, token = [], None
    while True:
        page = client.search_runs(
            [experiment.experiment_id], query, max_results=SEARCH_PAGE, order_by=["start_time ASC"], page_token=token
        )
        found += [_read(run) for run in page]
        token = page.token
        if not token:
            return found


def _read(run) -> ScoringRun:
    m = run.data.metrics
    rows = m.get("rows", 0.0)
    stats_json = _load_json(run.info.run_id)
    stats = P.from_json(stats_json) if stats_json else None
    lengths = np.asarray(stats_json["token_length_counts"]) if stats_json else None
    labels = np.array([round(m.get(f"predicted_share_{label}", 0.0) * rows) for label in LABELS], dtype=float)
    observed = checks.Observed(
        label_counts=labels,
        stats=stats,
        token_length_counts=lengths,
        realized_f1=m.get("f1_macro"),
        labelled_rows=int(m.get("labelled_rows", 0)),
        vocabulary_counts=np.asarray(words) if (words := (stats_json or {}).get("vocabulary_counts")) else None,
    )
    return ScoringRun(run.info.run_id, run.info.start_time, run.info.run_name or "", observed)


def _load_stats(run_id: str | None) -> dict[str, np.ndarray] | None:
    data = _load_json(run_id) if run_id else None
    return P.from_json(data) if data else None


def _load_json(run_id: str) -> dict | None:
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{P.ARTIFACT}")
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        log.debug("no %s in run %s: %s", P.ARTIFACT, run_id, one_line(exc))
        return None


def _window_metrics(results: list[checks.Check], found: list[ScoringRun]) -> dict[str, float]:
    """The monitoring run's metrics: volume, alerts, and each check's value over all runs."""
    out = {
        "scoring_runs": float(len(found)),
        "rows": float(sum(np.sum(r.observed.label_counts) for r in found)),
        "alerts": float(sum(c.status == checks.ALERT for c in results)),
    }
    for c in results:
        if c.scope == checks.ALL_RUNS and c.value is not None:
            out[c.check] = c.value
            if c.std is not None:
                out[f"{c.check}_std"] = c.std
    return out
