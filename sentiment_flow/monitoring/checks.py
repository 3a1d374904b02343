"""The checks `monitor` runs on a set of scoring jobs (one job, or all of them together) against the training
baseline of the version they scored with: each names its statistic, its value, the rows behind it, its threshold
and its verdict, and says "not enough rows" instead of a number below MIN_DRIFT_ROWS.

Statistics, and why (docs/monitoring.md says more):
- class_mix, token_length, confidence: PSI (drift.psi) of a histogram against the baseline's, on fixed bins. It
  is symmetric, needs no raw rows (a scoring run keeps histograms) and its sampling noise is known: a sample of
  the baseline's own population reads about chi2(bins - 1) / rows, under 0.1 from ~200 rows on.
- class_mix compares predicted labels with the *predicted* labels of the training test split: like with like (the
  gold mix differs from any model's predicted mix by its errors).
- estimated_f1: CBPE (estimate.py) against the version's test macro-F1, its standard deviation beside it.
- realized_f1: where a job had gold labels, the macro-F1 it measured, next to the estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sentiment_flow.config import MonitorConfig
from sentiment_flow.monitoring import drift, estimate
from sentiment_flow.monitoring import probabilities as P

OK, ALERT, TOO_FEW, SKIPPED = "ok", "alert", "not enough rows", "skipped"
ALL_RUNS = "all runs"  # the scope of the checks over every scoring run together


@dataclass(frozen=True)
class Check:
    """One check of one scope (a scoring run's id, or "all runs")."""

    scope: str
    check: str
    statistic: str
    value: float | None
    rows: int
    threshold: str
    status: str  # OK, ALERT, TOO_FEW or SKIPPED
    note: str = ""
    std: float | None = None  # the estimate's standard deviation (estimated_f1)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Observed:
    """What the checks read of one scope: label counts, probability stats (None if the run has none), token
    lengths, and the realized macro-F1 with its labelled rows where gold labels were given."""

    label_counts: np.ndarray
    stats: dict[str, np.ndarray] | None
    token_length_counts: np.ndarray | None
    realized_f1: float | None = None
    labelled_rows: int = 0
    vocabulary_counts: np.ndarray | None = None  # vocabulary.FIELDS


@dataclass(frozen=True)
class Baseline:
    """The version's training side: its test split's predicted-label counts and probability stats (None for a
    version trained before calibration), token lengths, and test macro-F1."""

    predicted_counts: np.ndarray | None
    stats: dict[str, np.ndarray] | None
    token_length_counts: np.ndarray | None
    f1_macro: float | None
    vocabulary_counts: np.ndarray | None = None  # the test split's vocabulary.FIELDS against the train split


def run_checks(scope: str, seen: Observed, base: Baseline, config: MonitorConfig) -> list[Check]:
    """Every check of one scope, in a fixed order."""
    rows = int(np.sum(seen.label_counts))
    out = [
        _psi(scope, "class_mix", base.predicted_counts, seen.label_counts, config.max_class_mix_psi),
        _psi(
            scope,
            "token_length",
            None if base.token_length_counts is None else drift.length_bins(base.token_length_counts),
            None if seen.token_length_counts is None else drift.length_bins(seen.token_length_counts),
            config.max_token_length_psi,
        ),
        _psi(
            scope,
            "confidence",
            None if base.stats is None else base.stats["confidence_counts"],
            None if seen.stats is None else seen.stats["confidence_counts"],
            config.max_confidence_psi,
        ),
    ]
    for name, at, increase in (
        ("unseen_words", 0, config.max_unseen_word_increase),
        ("unseen_bigrams", 2, config.max_unseen_bigram_increase),
    ):
        out.append(_unseen(scope, name, at, base.vocabulary_counts, seen.vocabulary_counts, rows, increase))
    estimated = estimate.cbpe(seen.stats) if seen.stats is not None else None
    out.append(_f1_drop(scope, "estimated_f1", estimated, rows, base.f1_macro, config.max_f1_decline))
    if seen.realized_f1 is not None:
        realized = {"f1_macro": seen.realized_f1}
        out.append(_f1_drop(scope, "realized_f1", realized, seen.labelled_rows, base.f1_macro, config.max_f1_decline))
    return out


def _psi(scope: str, name: str, expected, actual, threshold: float) -> Check:
    bound = f"<= {threshold:g}"
    if expected is None or actual is None:
        side = "the training run" if expected is None else "the scoring run"
        return Check(scope, name, "PSI", None, 0, bound, SKIPPED, f"{side} recorded no {name} histogram")
    rows = int(np.sum(actual))
    if rows < drift.MIN_DRIFT_ROWS:
        return Check(scope, name, "PSI", None, rows, bound, TOO_FEW, f"{rows} < {drift.MIN_DRIFT_ROWS} rows")
    value = drift.psi(expected, actual)
    return Check(scope, name, "PSI", value, rows, bound, ALERT if value > threshold else OK)


def _unseen(scope: str, name: str, at: int, expected, actual, rows: int, increase: float) -> Check:
    """The share of words (at=0) or bigrams (at=2) the train split never had, against the test split's share."""
    statistic = "unseen share"
    if expected is None or actual is None:
        side = "the training run" if expected is None else "the scoring run"
        return Check(scope, name, statistic, None, rows, "-", SKIPPED, f"{side} recorded no vocabulary counts")
    reference = expected[at] / max(expected[at + 1], 1)
    bound = f"<= {reference + increase:.4f} (test {reference:.4f} + {increase:g})"
    if rows < drift.MIN_DRIFT_ROWS:
        return Check(scope, name, statistic, None, rows, bound, TOO_FEW, f"{rows} < {drift.MIN_DRIFT_ROWS} rows")
    value = float(actual[at] / max(actual[at + 1], 1))
    return Check(scope, name, statistic, value, rows, bound, ALERT if value > reference + increase else OK)


def _f1_drop(scope: str, name: str, found: dict | None, rows: int, reference: float | None, drop: float) -> Check:
    statistic = "CBPE macro-F1" if name == "estimated_f1" else "macro-F1 on gold labels"
    if found is None or reference is None:
        why = "the scoring run recorded no probabilities" if found is None else "the version has no test_f1_macro"
        return Check(scope, name, statistic, None, rows, "-", SKIPPED, why)
    bound = f">= {reference - drop:.4f} (test {reference:.4f} - {drop:g})"
    if rows < drift.MIN_DRIFT_ROWS:
        return Check(scope, name, statistic, None, rows, bound, TOO_FEW, f"{rows} < {drift.MIN_DRIFT_ROWS} rows")
    value, std = found["f1_macro"], found.get("f1_macro_std")
    note = f"± {std:.4f} (1 std); estimated accuracy {found['accuracy']:.4f}" if std is not None else ""
    status = ALERT if value < reference - drop else OK
    return Check(scope, name, statistic, value, rows, bound, status, note, std)


def combined(observed: list[Observed]) -> Observed:
    """All scopes as one: counts and stats added (a scope without stats or lengths leaves them out)."""
    with_stats = [o.stats for o in observed if o.stats is not None]
    stats = None
    if with_stats:
        stats = P.empty()
        for more in with_stats:
            P.add(stats, more)
    lengths = [o.token_length_counts for o in observed if o.token_length_counts is not None]
    width = max((len(c) for c in lengths), default=0)
    labelled = [o for o in observed if o.realized_f1 is not None]
    vocabulary = [o.vocabulary_counts for o in observed if o.vocabulary_counts is not None]
    # The realized macro-F1 of all labelled jobs: a row-weighted mean (their confusion matrices are not kept).
    weights = [(float(o.realized_f1 or 0.0), o.labelled_rows) for o in labelled]
    realized = sum(f1 * n for f1, n in weights) / max(sum(n for _, n in weights), 1) if labelled else None
    return Observed(
        label_counts=np.sum([o.label_counts for o in observed], axis=0),
        stats=stats,
        token_length_counts=np.sum([np.pad(c, (0, width - len(c))) for c in lengths], axis=0) if lengths else None,
        realized_f1=realized,
        labelled_rows=sum(o.labelled_rows for o in labelled),
        vocabulary_counts=np.sum(vocabulary, axis=0) if vocabulary else None,
    )
