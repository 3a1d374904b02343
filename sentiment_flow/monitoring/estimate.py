"""Label-free performance estimates from calibrated probabilities: CBPE (NannyML's confidence-based performance
estimation), read from a scoring job's probability stats (probabilities.py).

With calibrated probabilities a row predicted j is truly class i with probability p_i, so the expected confusion
matrix's column j is the sum of the probability vectors of the rows predicted j; accuracy and macro-F1 are read
from it as from a counted one (metrics.py). Their uncertainty: each row's true class is one multinomial draw, so
column j's counts have covariance sum(diag(p) - p p^T); ESTIMATE_DRAWS normal draws of the matrix give the
standard deviation of the metric a labelled sample would realise. That is the sampling error only: it assumes
the probabilities are calibrated for the scored data (CBPE's premise, which a shift in P(y|x) breaks).
"""

from __future__ import annotations

import numpy as np

from sentiment_flow import metrics

ESTIMATE_DRAWS = 2000  # normal draws of the confusion matrix for the estimate's standard deviation
ESTIMATE_SEED = 0  # the same stats give the same uncertainty


def expected_confusion(stats: dict[str, np.ndarray]) -> np.ndarray:
    """The expected confusion matrix (rows gold, columns predicted) of the rows the stats describe."""
    return np.asarray(stats["probability_sums"], dtype=np.float64).T


def cbpe(stats: dict[str, np.ndarray]) -> dict[str, float]:
    """Estimated accuracy and macro-F1, each with its standard deviation, and the rows they describe."""
    sums = np.asarray(stats["probability_sums"], dtype=np.float64)
    rows = float(sums.sum())
    if rows == 0:
        return {"rows": 0.0}
    expected = expected_confusion(stats)
    found = metrics.from_confusion(expected)
    # Column j's counts: mean sums[j], covariance diag(sums[j]) - outer_sums[j] (positive semi-definite).
    covariance = np.stack([np.diag(s) for s in sums]) - np.asarray(stats["outer_sums"], dtype=np.float64)
    covariance = (covariance + covariance.transpose(0, 2, 1)) / 2  # exact in theory; symmetric to the last bit
    rng = np.random.default_rng(ESTIMATE_SEED)
    columns = np.stack(
        [
            # check_valid: float rounding leaves eigenvalues of -1e-13 in a matrix that is PSD by construction
            rng.multivariate_normal(sums[j], covariance[j], ESTIMATE_DRAWS, check_valid="ignore", method="eigh")
            for j in range(len(sums))
        ],
        axis=-1,
    )  # draws x gold x predicted
    draws = np.clip(columns, 0, None)
    # A draw's accuracy: the diagonal's share (each row is counted once whatever its gold class).
    accuracy_draws = np.trace(draws, axis1=-2, axis2=-1) / draws.sum(axis=(-2, -1))
    return {
        "rows": rows,
        "accuracy": found["accuracy"],
        "accuracy_std": float(accuracy_draws.std()),
        "f1_macro": found["f1_macro"],
        "f1_macro_std": float(metrics.macro_f1(draws).std()),
    }


def predicted_counts(stats: dict[str, np.ndarray]) -> np.ndarray:
    """Rows per predicted label (each row's probabilities sum to 1, so a column's sum counts its rows)."""
    return np.asarray(stats["probability_sums"], dtype=np.float64).sum(axis=1)
