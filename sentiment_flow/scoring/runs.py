"""Scoring runs: every scoring job (local or Spark) is one MLflow run: its parameters, the input as an
`mlflow.data` dataset, volume and label mix, accuracy where gold labels were given, and drift against the model's
training baseline (monitoring/drift.py)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from sentiment_flow import runs, store
from sentiment_flow.config import SCORING_EXPERIMENT
from sentiment_flow.errors import UserError
from sentiment_flow.monitoring import drift, probabilities, vocabulary

log = logging.getLogger(__name__)


@contextmanager
def scoring_run(experiment: str, run_name: str) -> Iterator[str]:
    """One MLflow run for one scoring job, in `experiment` (SCORING_EXPERIMENT if empty); yields its run id.

    Under `mlflow run` (MLFLOW_RUN_ID) it is the run `mlflow run` created, in the experiment `mlflow run` chose:
    an `experiment` naming another one is refused (a run cannot move), never silently ignored.
    Ends FAILED on an error and KILLED on SIGTERM or Ctrl-C (SystemExit, KeyboardInterrupt), never RUNNING.
    """
    store.check_store()  # a new sqlite store is created by one job at a time
    # Not mlflow.set_experiment: it would change the experiment of every later run in this process.
    given_run = os.environ.get("MLFLOW_RUN_ID")
    experiment_id = None if given_run else store.experiment_id(experiment or SCORING_EXPERIMENT)
    with runs.run(run_name, experiment_id) as run:
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
    model_run_id = training_run_id(model_uri, summary.model_version)
    name, _, version = summary.model_version.rpartition("/") if model_uri.startswith("models:/") else ("", "", "")
    runs.log_new_params(
        {
            **params,
            "model_uri": model_uri,
            "model_name": name,
            "model_version": version,
            "model_run_id": model_run_id or "",
            "input_path": input_path,
            "input_hash": summary.input_hash,
        }
    )
    _log_input(summary, input_path)
    _log_volume(summary)
    _log_probabilities(summary)
    return drift.check(summary.label_counts, summary.token_length_counts, model_run_id)


def _log_input(summary, input_path: str) -> None:
    """The input as the run's `scoring` dataset: its path (any path Spark reads), sha256 and column types."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    from sentiment_flow.evaluation import log_input

    try:  # any path Spark reads (s3a://, abfss://) names the dataset, even where MLflow has no resolver for it
        with warnings.catch_warnings():  # a local path matches two resolvers of the same class, and MLflow says so
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(input_path)
    except mlflow.exceptions.MlflowException:
        source = SparkDatasetSource(path=input_path)
    schema = _schema(summary.input_sample)
    dataset = MetaDataset(source, name=Path(input_path.rstrip("/")).name, digest=summary.input_hash[:32], schema=schema)  # type: ignore[abstract]  # abstractmethod, no ABCMeta
    log_input(dataset, context="scoring")


def _log_volume(summary) -> None:
    """Rows, speed, the predicted label mix, and accuracy and macro-F1 where gold labels were given."""
    rows = max(summary.rows, 1)
    metrics = {
        "rows": summary.rows,
        "blank_rows": summary.blank,
        "seconds": summary.seconds,
        "rows_per_second": summary.rows / summary.seconds if summary.seconds else 0.0,
        **{f"predicted_share_{label}": n / rows for label, n in summary.label_counts.items()},
    }
    if summary.accuracy is not None:
        metrics.update(accuracy=summary.accuracy, f1_macro=summary.f1_macro, labelled_rows=summary.labelled)
    mlflow.log_metrics(metrics)
    mlflow.log_dict(summary.label_counts, "predicted_label_counts.json")


def _log_probabilities(summary) -> None:
    """What `monitor` reads of this job: its probabilities' stats and its texts per token count."""
    extra = {"token_length_counts": summary.token_length_counts}
    if summary.vocabulary_counts is not None:
        extra["vocabulary_counts"] = summary.vocabulary_counts
    stats = probabilities.to_json(summary.probability_stats, **extra)
    mlflow.log_dict(stats, probabilities.ARTIFACT)


def known_vocabulary(model_uri: str, model_version: str) -> dict | None:
    """The training vocabulary a job of this model counts unseen words against (monitoring/vocabulary.py), or None."""
    return vocabulary.load(drift.baseline_run_id(training_run_id(model_uri, model_version)))


def training_run_id(model_uri: str, model_version: str) -> str | None:
    """The training run of a registry version or a runs:/ URI; None for a model directory."""
    if model_uri.startswith("runs:/"):
        return model_uri.removeprefix("runs:/").split("/", 1)[0]
    if model_uri.startswith("models:/"):
        name, _, version = model_version.rpartition("/")
        found = mlflow.MlflowClient().get_model_version(name, version)
        return found.tags.get("mlflow_run_id") or found.run_id
    return None


def _schema(sample):
    """The input's column types from its first rows, when MLflow can infer them (duplicate names it cannot)."""
    from mlflow.models import infer_signature

    if sample is None or sample.columns.duplicated().any():
        return None
    return infer_signature(sample).inputs
