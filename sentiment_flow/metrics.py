"""Classification metrics from confusion matrices: the one macro-F1 of the project.

Training's per-epoch validation metrics, a scoring job's accuracy on gold labels (counted chunk by chunk, or per
Spark group) and the paired bootstrap of two models' macro-F1 (evaluation.py) all count a confusion matrix and read
their metrics from it here. Each equals sklearn's with labels=all classes and zero_division=0 (tests/test_metrics.py
checks that). The test split's own metrics come from `mlflow.models.evaluate` (evaluation.py).
"""

from __future__ import annotations

import numpy as np

from sentiment_flow.config import LABELS

CLASSES = len(LABELS)


def confusion_matrix(y_true, y_pred) -> np.ndarray:
    """Counts of (gold, predicted) label-id pairs: rows gold, columns predicted. Arrays of shape (..., rows) give
    one matrix per leading index, shape (..., CLASSES, CLASSES): the bootstrap counts all its resamples at once."""
    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    groups = int(np.prod(y.shape[:-1]))
    group = np.arange(groups).reshape(y.shape[:-1] + (1,))
    cells = (group * CLASSES * CLASSES + y * CLASSES + p).ravel()
    return np.bincount(cells, minlength=groups * CLASSES * CLASSES).reshape(y.shape[:-1] + (CLASSES, CLASSES))


def f1_per_class(confusion: np.ndarray) -> np.ndarray:
    """F1 of each class (last axis), 0 for a class no row has and no row got."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    denominators = confusion.sum(axis=-2) + confusion.sum(axis=-1)  # 2tp + fp + fn
    return np.divide(2 * tp, denominators, out=np.zeros(tp.shape), where=denominators > 0)


def macro_f1(confusion: np.ndarray) -> np.ndarray:
    """Macro-F1 of one confusion matrix (a 0-d array) or of each in a stack."""
    return f1_per_class(confusion).mean(axis=-1)


def from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """accuracy, f1_weighted and f1_macro of one confusion matrix; empty when it counts no rows."""
    total = confusion.sum()
    if total == 0:
        return {}
    f1 = f1_per_class(confusion)
    return {
        "accuracy": float(np.trace(confusion) / total),
        "f1_weighted": float((f1 * confusion.sum(axis=1)).sum() / total),
        "f1_macro": float(f1.mean()),
    }


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """accuracy, f1_weighted, f1_macro of label ids: the Trainer's per-epoch validation metrics."""
    return from_confusion(confusion_matrix(y_true, y_pred))


def trainer_metrics(eval_prediction) -> dict[str, float]:
    """compute_metrics for transformers.Trainer: logits -> the headline metrics."""
    logits, labels = eval_prediction
    return classification_metrics(labels, np.argmax(logits, axis=-1))


def report(y_true, y_pred) -> str:
    """sklearn's text classification report with the label names."""
    from sklearn.metrics import classification_report

    return classification_report(
        y_true, y_pred, labels=list(range(CLASSES)), target_names=list(LABELS), digits=4, zero_division=0
    )
