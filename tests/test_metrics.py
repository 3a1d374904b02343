"""metrics.py, the project's one macro-F1, against sklearn's with every class listed and zero_division=0."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from sentiment_flow import metrics

LABEL_IDS = [0, 1, 2]


def random_labels(seed: int, rows: int, classes=(0, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.choice(classes, rows), rng.choice(classes, rows)


@pytest.mark.parametrize("seed", range(30))
def test_classification_metrics_equal_sklearns_also_when_a_class_is_missing(seed):
    rows = int(np.random.default_rng(seed).integers(1, 40))
    # Every third case draws from two classes only: a class no row has and no row got scores 0, not NaN.
    y, p = random_labels(seed, rows, (0, 1, 2) if seed % 3 else (0, 2))
    assert metrics.classification_metrics(y, p) == pytest.approx(
        {
            "accuracy": accuracy_score(y, p),
            "f1_weighted": f1_score(y, p, labels=LABEL_IDS, average="weighted", zero_division=0),
            "f1_macro": f1_score(y, p, labels=LABEL_IDS, average="macro", zero_division=0),
        }
    )


def test_a_stack_of_resamples_gets_each_its_own_macro_f1():
    y, p = random_labels(6, 50)
    rows = np.random.default_rng(0).integers(0, 50, size=(20, 50))
    expected = [f1_score(y[r], p[r], labels=LABEL_IDS, average="macro", zero_division=0) for r in rows]
    assert metrics.macro_f1(metrics.confusion_matrix(y[rows], p[rows])) == pytest.approx(expected)


def test_confusion_rows_are_gold_and_columns_predicted():
    confusion = metrics.confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1])
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_no_rows_give_no_metrics_rather_than_zeros():
    assert metrics.from_confusion(np.zeros((3, 3), dtype=int)) == {}
