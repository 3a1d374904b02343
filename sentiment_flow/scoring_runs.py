"""Scoring runs: every scoring job (local or Spark) is one MLflow run, with drift against the training baseline.

Training logs `drift_baseline.json` (the test split's label counts and the training texts' token lengths);
a scoring run compares its predicted labels and its texts' token lengths with it, each as one population
stability index (PSI) and a plot. A version trained before the baseline existed is scored without drift.
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
from mlflow.entities import RunStatus

from sentiment_flow.config import LABELS
from sentiment_flow.errors import one_line

log = logging.getLogger(__name__)

BASELINE_ARTIFACT = "drift_baseline.json"
# Left edges of the token-length bins (tokens after truncation); the last bin is open. Narrow where tweets are.
LENGTH_EDGES = (0, 8, 16, 24, 32, 48, 64, 96, 128, 256)
# A share of 0 makes PSI infinite: empty bins count as this share, the usual PSI convention.
PSI_FLOOR = 1e-4


def baseline(test_label_ids, train_lengths) -> dict:
    """The drift baseline training logs: the test split's label counts and the training token-length counts."""
    return {
        "labels": list(LABELS),
        "test_label_counts": np.bincount(np.asarray(test_label_ids, dtype=int), minlength=len(LABELS)).tolist(),
        "token_length_counts": np.bincount(np.asarray(train_lengths, dtype=int)).tolist(),
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
    """One MLflow run for one scoring job, in `experiment`; under `mlflow run` (MLFLOW_RUN_ID), the run it created.

    Ends FAILED on an error and KILLED on SIGTERM or Ctrl-C (SystemExit, KeyboardInterrupt), never RUNNING.
    """
    from sentiment_flow.registry.store import experiment_id as get_experiment_id
    from sentiment_flow.tracking import check_store

    check_store()  # a new sqlite store is created by one job at a time
    # Not mlflow.set_experiment: it would change the experiment of every later run in this process.
    experiment_id = None if os.environ.get("MLFLOW_RUN_ID") else get_experiment_id(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        try:
            yield run.info.run_id
        except (SystemExit, KeyboardInterrupt):
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise


def record(summary, model_uri: str, input_path: str, params: dict[str, str]) -> dict[str, float]:
    """Log what a scoring job did into the active run; returns the drift PSIs it could compute."""
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

    drift: dict[str, float] = {}
    reference = _baseline(model_run_id)
    if isinstance(reference, str):
        mlflow.set_tag("drift", f"skipped: {reference}")
        log.info("Drift skipped: %s", reference)
        return drift
    predicted = [summary.label_counts[label] for label in reference["labels"]]
    expected_lengths = length_bins(reference["token_length_counts"])
    actual_lengths = length_bins(summary.token_length_counts)
    drift = {
        "drift_label_psi": psi(reference["test_label_counts"], predicted),
        "drift_token_length_psi": psi(expected_lengths, actual_lengths),
    }
    mlflow.log_metrics(drift)
    mlflow.set_tag("drift", "computed")
    names = [str(edge) for edge in LENGTH_EDGES[:-1]] + [f"{LENGTH_EDGES[-1]}+"]
    figures = {
        "label_drift.png": plots.compare_shares(reference["labels"], reference["test_label_counts"], predicted,
                                                "Predicted labels vs training test split", drift["drift_label_psi"]),
        "token_length_drift.png": plots.compare_shares(names, expected_lengths, actual_lengths,
                                                       "Tokens per text vs training", drift["drift_token_length_psi"]),
    }
    for filename, figure in figures.items():
        mlflow.log_figure(figure, f"drift/{filename}")
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
