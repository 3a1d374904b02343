"""What a scoring job keeps of its per-row probabilities, compactly, for `monitor`: a histogram of each row's
confidence (its top probability), and per predicted label the sums of the probability vectors and of their outer
products. Training logs the same for its test split (the baseline).

The sums are enough for CBPE (NannyML's confidence-based performance estimation): with calibrated probabilities,
a row predicted j is truly i with probability p_i, so the expected confusion matrix's column j is the sum of the p
of the rows predicted j, and the variance of that column's counts is sum(diag(p) - p p^T) (a sum of independent
multinomial draws of one row each). Both engines add these up per chunk (files.py) or per batch (spark.py).
"""

from __future__ import annotations

import numpy as np

from sentiment_flow.config import LABELS

ARTIFACT = "probability_stats.json"  # in each scoring run, and in each training run for its test split
# Confidence histogram: CONFIDENCE_BINS equal bins over [0, 1]; with 3 labels the top probability is >= 1/3, so
# the first 6 stay empty: 20 bins keep 0.05 steps where the mass is.
CONFIDENCE_BINS = 20


def empty() -> dict[str, np.ndarray]:
    """The stats of no rows: confidence counts, and per predicted label the probability sums and outer products."""
    k = len(LABELS)
    return {
        "confidence_counts": np.zeros(CONFIDENCE_BINS, dtype=np.int64),
        "probability_sums": np.zeros((k, k)),  # [predicted j] = sum of p over rows predicted j
        "outer_sums": np.zeros((k, k, k)),  # [predicted j] = sum of p p^T over rows predicted j
    }


def of(probs) -> dict[str, np.ndarray]:
    """The stats of rows of probabilities (columns in LABELS order)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(LABELS))
    stats = empty()
    if not len(probs):
        return stats
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    bins = np.clip((confidence * CONFIDENCE_BINS).astype(int), 0, CONFIDENCE_BINS - 1)
    stats["confidence_counts"] += np.bincount(bins, minlength=CONFIDENCE_BINS)
    for j in range(len(LABELS)):
        rows = probs[predicted == j]
        stats["probability_sums"][j] = rows.sum(axis=0)
        stats["outer_sums"][j] = rows.T @ rows
    return stats


def add(total: dict[str, np.ndarray], more: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`total` plus `more`, in place; returns `total`."""
    for key in total:
        total[key] += np.asarray(more[key], dtype=total[key].dtype)
    return total


def to_json(stats: dict[str, np.ndarray], **extra) -> dict:
    """The stats (and `extra` arrays, e.g. a scoring job's token_length_counts) as the JSON artifact holds them:
    lists, with the label order they follow."""
    arrays = {**stats, **extra}
    return {"labels": list(LABELS), **{key: np.asarray(value).tolist() for key, value in arrays.items()}}


def from_json(data: dict) -> dict[str, np.ndarray]:
    """The stats back from `to_json`'s form, checked to follow LABELS."""
    if data.get("labels") != list(LABELS):
        raise ValueError(f"probability stats for labels {data.get('labels')}, not {list(LABELS)}")
    return {key: np.asarray(data[key]) for key in empty()}
