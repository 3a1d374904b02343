"""Scoring runs: every scoring job (local or Spark) is one MLflow run, with drift against the training baseline.

Training logs `drift_baseline.json`: the test split's label counts and token lengths, one population, the one
the version's test metrics describe. A scoring run compares its predicted labels and its texts' token lengths
with it, each as one population stability index (PSI) and a plot, once it has MIN_DRIFT_ROWS rows to judge. An
int8 variant is judged against its fp32 source's baseline; a version trained before baselines existed is
scored without drift.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np

from sentiment_flow.config import LABELS
from sentiment_flow.errors import UserError, one_line

log = logging.getLogger(__name__)

BASELINE_ARTIFACT = "drift_baseline.json"
# Left edges of the token-length bins (tokens after truncation); the last bin is open. Narrow where tweets are.
LENGTH_EDGES = (0, 8, 16, 24, 32, 48, 64, 96, 128, 256)
# A share of 0 makes PSI infinite: empty bins count as this share, the usual PSI convention.
PSI_FLOOR = 1e-4
# Fewer rows than this and a check records "not enough rows" instead of a PSI. A sample drawn from the baseline
# itself reads PSI ~ chi2(bins - 1) / rows: with the 10 length bins, 95 % of samples stay under 0.1 ("stable")
# from ~170 rows on. Measured with the English test and train splits' MiniLM token lengths as baselines (1,000
# samples of each size): PSI 95th percentile 0.11-0.18 at 100 rows (8-19 % of samples above 0.1), 0.064-0.067
# at 200 (0-3 %). The README's "Scoring runs" states the same.
MIN_DRIFT_ROWS = 200
# The run tag naming an int8 variant's fp32 source training run (optimize.py's lineage tags): its baseline's run.
SOURCE_RUN_TAG = "source_run_id"


def baseline(encoded) -> dict:
    """The drift baseline training logs, from its tokenized splits (data.tokenize): the test split's label counts
    and its texts per token count (after truncation, special tokens included, as `scoring.token_lengths` counts).

    Both from the test split, one population: the English train split's texts are longer than the test split's
    (token-length PSI 0.25 between the two), so lengths from the train split made the test split itself, scored
    by its own model, read as a large shift.
    """
    test = encoded["test"]
    return {
        "labels": list(LABELS),
        "test_label_counts": np.bincount(np.asarray(test["labels"], dtype=int), minlength=len(LABELS)).tolist(),
        "token_length_counts": np.bincount([len(ids) for ids in test["input_ids"]]).tolist(),
    }


def psi(expected, actual) -> float:
    """Population stability index of two histograms (counts): sum((a - e) * ln(a / e)) over shares.

    That is KL(a||e) + KL(e||a); by the usual reading < 0.1 is stable, 0.1-0.25 a shift, > 0.25 a large one.
    """
    from scipy.stats import entropy

    e, a = (np.maximum(np.asarray(x, float) / max(np.sum(x), 1), PSI_FLOOR) for x in (expected, actual))
    return float(entropy(a, e) + entropy(e, a))  # entropy() renormalises the floored shares


def length_bins(counts) -> np.ndarray:
    """Texts per LENGTH_EDGES bin from texts per token count."""
    counts = np.asarray(counts, dtype=np.int64)
    counts = np.pad(counts, (0, max(0, LENGTH_EDGES[-1] + 1 - len(counts))))
    return np.add.reduceat(counts, LENGTH_EDGES)


@contextmanager
def scoring_run(experiment: str, run_name: str) -> Iterator[str]:
    """One MLflow run for one scoring job, in `experiment` (SCORING_EXPERIMENT if empty); yields its run id.

    Under `mlflow run` (MLFLOW_RUN_ID) it is the run `mlflow run` created, in the experiment `mlflow run` chose:
    an `experiment` naming another one is refused (a run cannot move), never silently ignored.
    Ends FAILED on an error and KILLED on SIGTERM or Ctrl-C (SystemExit, KeyboardInterrupt), never RUNNING.
    """
    from sentiment_flow.config import SCORING_EXPERIMENT
    from sentiment_flow.registry.store import experiment_id as get_experiment_id
    from sentiment_flow.tracking import check_store, killed_when_stopped

    check_store()  # a new sqlite store is created by one job at a time
    # Not mlflow.set_experiment: it would change the experiment of every later run in this process.
    given_run = os.environ.get("MLFLOW_RUN_ID")
    experiment_id = None if given_run else get_experiment_id(experiment or SCORING_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run, killed_when_stopped():
        if given_run and experiment:
            _check_experiment(run.info.experiment_id, experiment)
        yield run.info.run_id


def _check_experiment(experiment_id: str, wanted: str) -> None:
    """Refuse a scoring run that `mlflow run` created in another experiment than the one the job names."""
    actual = mlflow.MlflowClient().get_experiment(experiment_id).name
    if actual != wanted:
        raise UserError(
            f"`mlflow run` created this job's run in experiment {actual!r}, not {wanted!r}, and a run cannot move "
            f"between experiments; name the experiment to mlflow run itself: mlflow run . -e score --experiment-name "
            f"{wanted} ... (or MLFLOW_EXPERIMENT_NAME={wanted}), without -P experiment_name."
        )


def record(summary, model_uri: str, input_path: str, params: dict[str, str]) -> dict[str, float | str]:
    """Log what a scoring job did into the active run; returns each drift check's PSI, or why it has none."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    from sentiment_flow import plots
    from sentiment_flow.evaluation import log_input

    model_run_id = _model_run_id(model_uri, summary.model_version)
    name, _, version = summary.model_version.rpartition("/") if model_uri.startswith("models:/") else ("", "", "")
    given = {
        **params,
        "model_uri": model_uri, "model_name": name, "model_version": version, "model_run_id": model_run_id or "",
        "input_path": input_path, "input_hash": summary.input_hash,
    }
    # `mlflow run` logged its MLproject parameters already; MLflow refuses to change a param.
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params  # type: ignore[union-attr]  # in a run
    mlflow.log_params({k: v for k, v in given.items() if k not in logged})

    try:  # any path Spark reads (s3a://, abfss://) names the dataset, even where MLflow has no resolver for it
        with warnings.catch_warnings():  # a local path matches two resolvers of the same class, and MLflow says so
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(input_path)
    except mlflow.exceptions.MlflowException:
        source = SparkDatasetSource(path=input_path)
    schema = _schema(summary.input_sample)
    dataset = MetaDataset(source, name=Path(input_path.rstrip("/")).name, digest=summary.input_hash[:32], schema=schema)  # type: ignore[abstract]  # abstractmethod, no ABCMeta
    log_input(dataset, context="scoring")

    rows = max(summary.rows, 1)
    metrics = {
        "rows": summary.rows, "blank_rows": summary.blank, "seconds": summary.seconds,
        "rows_per_second": summary.rows / summary.seconds if summary.seconds else 0.0,
        **{f"predicted_share_{label}": n / rows for label, n in summary.label_counts.items()},
    }
    if summary.accuracy is not None:
        metrics.update(accuracy=summary.accuracy, f1_macro=summary.f1_macro, labelled_rows=summary.labelled)
    mlflow.log_metrics(metrics)
    mlflow.log_dict(summary.label_counts, "predicted_label_counts.json")

    baseline_run_id = _baseline_run_id(model_run_id)
    reference = _baseline(baseline_run_id)
    if isinstance(reference, str):
        mlflow.set_tag("drift", f"skipped: {reference}")
        log.info("Drift skipped: %s", reference)
        return {"drift": f"skipped: {reference}"}
    mlflow.set_tag("drift_baseline_run_id", baseline_run_id)
    names = [str(edge) for edge in LENGTH_EDGES[:-1]] + [f"{LENGTH_EDGES[-1]}+"]
    # Metric name -> (bin names, baseline counts, this job's counts, plot file, plot title).
    checks: dict[str, tuple] = {
        "drift_label_psi": (reference["labels"], reference["test_label_counts"],
                            [summary.label_counts[label] for label in reference["labels"]],
                            "label_drift.png", "Predicted labels vs training test split"),
        "drift_token_length_psi": (names, length_bins(reference["token_length_counts"]),
                                   length_bins(summary.token_length_counts),
                                   "token_length_drift.png", "Tokens per text vs training test split"),
    }
    drift: dict[str, float | str] = {}
    for metric, (bins, expected, actual, filename, title) in checks.items():
        rows = int(np.sum(actual))  # the Spark engine's token lengths are a sample: its size is what counts
        if rows < MIN_DRIFT_ROWS:
            drift[metric] = f"not enough rows ({rows} < {MIN_DRIFT_ROWS})"
            mlflow.set_tag(metric, drift[metric])
            continue
        drift[metric] = value = psi(expected, actual)
        mlflow.log_metric(metric, value)
        figure = plots.compare_shares(bins, expected, actual, title, value)
        mlflow.log_figure(figure, f"drift/{filename}")
    skipped = {metric: note for metric, note in drift.items() if isinstance(note, str)}
    if not skipped:
        mlflow.set_tag("drift", "computed")
    elif len(skipped) == len(drift):
        mlflow.set_tag("drift", "skipped: " + "; ".join(sorted(set(skipped.values()))))
    else:  # e.g. a Spark job whose token-length sample is smaller than its row count
        mlflow.set_tag("drift", "partly computed: " + "; ".join(f"{k} {v}" for k, v in skipped.items()))
    return drift


def _model_run_id(model_uri: str, model_version: str) -> str | None:
    """The training run of a registry version or a runs:/ URI; None for a model directory."""
    if model_uri.startswith("runs:/"):
        return model_uri.removeprefix("runs:/").split("/", 1)[0]
    if model_uri.startswith("models:/"):
        name, _, version = model_version.rpartition("/")
        found = mlflow.MlflowClient().get_model_version(name, version)
        return found.tags.get("mlflow_run_id") or found.run_id
    return None


def _baseline_run_id(model_run_id: str | None) -> str | None:
    """The run holding the model's drift baseline: its own, or for an int8 variant its source's training run."""
    if model_run_id is None:
        return None
    try:
        source = mlflow.MlflowClient().get_run(model_run_id).data.tags.get(SOURCE_RUN_TAG)
    except mlflow.exceptions.MlflowException as exc:  # a deleted run: _baseline says there is none
        log.debug("cannot read run %s: %s", model_run_id, one_line(exc))
        return model_run_id
    return source or model_run_id


def _baseline(run_id: str | None) -> dict | str:
    """The training run's drift baseline, or why there is none (a note, never an error)."""
    if run_id is None:
        return "the model is a local directory, not a registered version or a run's model"
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{BASELINE_ARTIFACT}")
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        log.debug("no drift baseline in run %s: %s", run_id, one_line(exc))
        return f"training run {run_id} logged no {BASELINE_ARTIFACT} (trained before drift baselines existed?)"


def _schema(sample):
    """The input's column types from its first rows, when MLflow can infer them (duplicate names it cannot)."""
    from mlflow.models import infer_signature

    if sample is None or sample.columns.duplicated().any():
        return None
    return infer_signature(sample).inputs
