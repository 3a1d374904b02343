"""Classification metrics shared by training (eval and test) and scoring with gold labels."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, f1_score

from sentiment_flow.config import LABELS


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """accuracy, f1_weighted, f1_macro: the Trainer's per-epoch validation metrics (the test split's come from
    `mlflow.models.evaluate`, see evaluation.py)."""
    ids = list(range(len(LABELS)))
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
    }
    return metrics


def trainer_metrics(eval_prediction) -> dict[str, float]:
    """compute_metrics for transformers.Trainer: logits -> the headline metrics."""
    logits, labels = eval_prediction
    return classification_metrics(labels, np.argmax(logits, axis=-1))


def report(y_true, y_pred) -> str:
    """sklearn's text classification report with the label names."""
    return classification_report(
        y_true, y_pred, labels=list(range(len(LABELS))), target_names=list(LABELS), digits=4, zero_division=0
    )
