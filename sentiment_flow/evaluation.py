"""Evaluation through MLflow's own API: splits as `mlflow.data` datasets, metrics from `mlflow.models.evaluate`
under this project's names, and a paired bootstrap of the macro-F1 difference of two models on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sentiment_flow.config import LABEL2ID, LABELS
from sentiment_flow.metrics import confusion_matrix, macro_f1

TARGET = "label"  # the split frames' label column (ids 0-2), the evaluations' targets
PREDICTION = "prediction"  # the column holding predicted ids when predictions are given, not computed
# MLflow's classifier metric (macro-averaged under AVERAGE) -> this project's name; per-class and weighted
# metrics come from MLflow's per_class_metrics table.
MLFLOW_NAMES = {"accuracy_score": "accuracy", "f1_score": "f1_macro"}
AVERAGE = "macro"
PER_CLASS = {"precision": "precision_score", "recall": "recall_score", "f1": "f1_score"}  # ours -> the table's column
METRIC_NAMES = (*MLFLOW_NAMES.values(), "f1_weighted", *(f"{kind}_{label}" for label in LABELS for kind in PER_CLASS))
# Split -> the mlflow.data context training logs it under; promotion reads the "test" one back.
CONTEXTS = {"train": "train", "valid": "validation", "test": "test"}


def dataset(frame: pd.DataFrame, source: str, name: str):
    """`frame` (text, label ids) as an mlflow.data dataset whose digest identifies its rows."""
    from mlflow.data.pandas_dataset import from_pandas  # mlflow.data.from_pandas, its attribute set at run time

    return from_pandas(frame, source=source, targets=TARGET, name=name)


def log_input(data, context: str | None = None) -> None:
    """`mlflow.log_input` of `data` to the active run, tried a second time if the store refuses it.

    MLflow's stores look the dataset (name, digest) up and insert it when it is missing, so two processes logging
    one new dataset into one experiment at once can both insert it, and the store refuses the second insert
    (a UNIQUE constraint on datasets). Once the first one's insert is committed, the second try finds the
    dataset and only links it to the run; a try that had gone through is a no-op the second time.
    """
    import mlflow

    try:
        mlflow.log_input(data, context=context)
    except mlflow.exceptions.MlflowException:
        mlflow.log_input(data, context=context)


def evaluate(data, predict=None, prefix: str = "") -> dict[str, float]:
    """`mlflow.models.evaluate` of a classifier in the active run; returns this project's metric names.

    `predict` maps a frame of texts to label ids; without it, `data` must hold them in PREDICTION.
    MLflow logs its own metrics (under `prefix`), the per-class table and the confusion matrix to the run.
    """
    import mlflow
    from mlflow.data.dataset import Dataset

    given = isinstance(data, Dataset)  # a dataset names its own targets and predictions
    if given:  # logged as `evaluate` would (context: the prefix), but retried; `evaluate` then finds it logged
        log_input(data, context=prefix or None)
    result = mlflow.models.evaluate(
        model=predict,
        data=data,
        targets=None if given else TARGET,
        predictions=None if given or predict else PREDICTION,
        model_type="classifier",
        evaluator_config={
            "label_list": list(range(len(LABELS))),  # every class, also one that no row has or no row got
            "average": AVERAGE,
            "log_model_explainability": False,
            "metric_prefix": prefix,
        },
    )
    metrics = {ours: float(result.metrics[f"{prefix}{theirs}"]) for theirs, ours in MLFLOW_NAMES.items()}
    table = result.artifacts["per_class_metrics"].content.set_index("positive_class")
    support = table["true_positives"] + table["false_negatives"]
    metrics["f1_weighted"] = float((table[PER_CLASS["f1"]] * support).sum() / support.sum())
    for i, label in enumerate(LABELS):
        for ours, column in PER_CLASS.items():
            metrics[f"{ours}_{label}"] = float(table.loc[i, column])
    return metrics


def label_ids(labels) -> np.ndarray:
    """Predicted label names as ids."""
    return np.array([LABEL2ID[label] for label in labels], dtype=int)


def bootstrap_f1_difference(
    y_true, candidate, baseline, resamples: int, seed: int, batch: int = 200
) -> tuple[float, float]:
    """The 95 % interval of macro-F1(candidate) - macro-F1(baseline), from paired bootstrap resamples of the rows.

    Both models are scored on the same resampled rows each time, so what the rows have in common cancels.
    """
    y, a, b = (np.asarray(v, dtype=int) for v in (y_true, candidate, baseline))
    rng = np.random.default_rng(seed)
    differences = []
    for start in range(0, resamples, batch):
        rows = rng.integers(0, len(y), size=(min(batch, resamples - start), len(y)))
        differences.append(macro_f1(confusion_matrix(y[rows], a[rows])) - macro_f1(confusion_matrix(y[rows], b[rows])))
    low, high = np.percentile(np.concatenate(differences), [2.5, 97.5])
    return float(low), float(high)
