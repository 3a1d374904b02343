"""Same-data evidence for promotion: one frozen evaluation set (the champion's logged test dataset, or
--eval-data), and each version's `mlflow.models.evaluate` on it, kept as a tagged run in an experiment of its
own so that a (version, dataset digest) is evaluated once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from sentiment_flow import evaluation, runs
from sentiment_flow.config import INPUT_COLUMN, ScoreConfig
from sentiment_flow.store import equals, models_uri, source_run
from sentiment_flow.store import experiment_id as store_experiment_id

EXPERIMENT = "sentiment-flow-evaluations"
PREDICTIONS_FILE = "predictions.json"  # predicted label ids in the dataset's row order: the bootstrap pairs them
MODEL_TAG, VERSION_TAG, DIGEST_TAG = "evaluation.model_name", "evaluation.model_version", "evaluation.dataset_digest"


@dataclass(frozen=True)
class EvalSet:
    """The rows both versions are evaluated on, and where they came from."""

    frame: pd.DataFrame  # text, label ids
    dataset: Any  # the mlflow.data dataset of `frame`: its digest keys the cache
    origin: str  # for the gate table: "the champion v3's test dataset" or "--eval-data PATH"

    @property
    def description(self) -> str:
        return f"{self.origin} ({len(self.frame)} rows, digest {self.dataset.digest})"


@dataclass(frozen=True)
class Evaluation:
    """One version evaluated on an EvalSet."""

    version: str
    metrics: dict[str, float]  # evaluation.evaluate's names: f1_macro, accuracy, f1_<label>, ...
    predictions: np.ndarray  # label ids, row by row
    run_id: str  # the evaluation run that holds them


def eval_set(client: MlflowClient, champion: ModelVersion | None, path: str) -> tuple[EvalSet | None, str]:
    """The frozen evaluation set, or None and why there is none (for the gate notes)."""
    from sentiment_flow.data import read_split

    if path:
        source = str(Path(path).expanduser().resolve())
        frame = read_split(source)
        return EvalSet(frame, evaluation.dataset(frame, source, "eval-data"), f"--eval-data {path}"), ""
    if champion is None:
        return None, "no champion"
    label = f"champion v{champion.version}"
    run = source_run(client, champion)
    logged = [
        i.dataset
        for i in (run.inputs.dataset_inputs if run else [])
        if any(t.key == "mlflow.data.context" and t.value == evaluation.CONTEXTS["test"] for t in i.tags)
    ]
    if not logged:
        return None, f"{label} has no logged test dataset (trained before datasets were logged)"
    source = json.loads(logged[0].source).get("uri", "")
    if not Path(source).is_file():
        return None, f"the test dataset of {label}, {source}, is not a file here"
    frame = read_split(source)
    dataset = evaluation.dataset(frame, source, logged[0].name)
    if dataset.digest != logged[0].digest:
        return None, f"{source} changed since {label} was tested (digest {logged[0].digest}, now {dataset.digest})"
    return EvalSet(frame, dataset, f"the test dataset of {label}"), ""


def evaluate_version(client: MlflowClient, mv: ModelVersion, data: EvalSet) -> Evaluation:
    """`mv` evaluated on `data`: the earliest finished evaluation run for (version, digest), else a new one.

    Two promotions evaluating the same version at once may both compute it; both runs hold the same result
    (inference is deterministic), and later promotions read the earliest.
    """
    experiment_id = store_experiment_id(EXPERIMENT, "Evaluations behind `promote`.")
    tags = {MODEL_TAG: mv.name, VERSION_TAG: str(mv.version), DIGEST_TAG: data.dataset.digest}
    query = " and ".join([*(equals(f"tags.`{k}`", v) for k, v in tags.items()), "attributes.status = 'FINISHED'"])
    found = client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        run = found[0]
        predictions = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{PREDICTIONS_FILE}")["predictions"]
        metrics = {key: run.data.metrics[key] for key in evaluation.METRIC_NAMES}
        return Evaluation(str(mv.version), metrics, np.asarray(predictions, dtype=int), run.info.run_id)
    return _evaluate(client, experiment_id, mv, data, tags)


def _evaluate(client: MlflowClient, experiment_id: str, mv: ModelVersion, data: EvalSet, tags: dict) -> Evaluation:
    from sentiment_flow.scoring import load_scorer, predict_texts

    uri = models_uri(mv.name, mv.version)
    scorer = load_scorer(uri)
    predicted: list[np.ndarray] = []

    def predict(frame: pd.DataFrame) -> np.ndarray:
        predicted.append(
            evaluation.label_ids(predict_texts(scorer, frame[INPUT_COLUMN], ScoreConfig.batch_size)["label"])
        )
        return predicted[-1]

    # An explicit run id: under `mlflow run`, MLFLOW_RUN_ID names the project's run, which must not be resumed.
    run = client.create_run(
        experiment_id, tags={**tags, "evaluation.model_uri": uri}, run_name=f"{mv.name}-v{mv.version}"
    )
    with runs.run(run_id=run.info.run_id):
        metrics = evaluation.evaluate(data.dataset, predict)
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"predictions": predicted[-1].tolist()}, PREDICTIONS_FILE)
    return Evaluation(str(mv.version), metrics, predicted[-1], run.info.run_id)
