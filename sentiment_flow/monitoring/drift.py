"""Drift of a scoring job against its model's training baseline: predicted labels and token lengths, each one
population stability index (PSI) and a plot, judged only once there are MIN_DRIFT_ROWS rows.

Training logs `drift_baseline.json` (`baseline`): the test split's label counts and token lengths, one population,
the one the version's test metrics describe. An int8 variant is judged against its fp32 source's baseline; a
version trained before baselines existed is scored without drift.
"""

from __future__ import annotations

import logging

import mlflow
import numpy as np

from sentiment_flow.config import LABELS
from sentiment_flow.errors import one_line

log = logging.getLogger(__name__)


BASELINE_ARTIFACT = "drift_baseline.json"
# Left edges of the token-length bins (tokens after truncation); the last bin is open. Narrow where tweets are.
LENGTH_EDGES = (0, 8, 16, 24, 32, 48, 64, 96, 128, 256)
# A share of 0 makes PSI infinite: empty bins count as this share, the usual PSI convention.
PSI_FLOOR = 1e-4
# Fewer rows than this and a check records "not enough rows" instead of a PSI. A sample drawn from the baseline
# itself reads PSI ~ chi2(bins - 1) / rows: with the 10 length bins, 95 % of samples stay under 0.1 ("stable")
# from ~170 rows on. Measured with the English test and train splits' MiniLM token lengths as baselines (1,000
# samples of each size): PSI 95th percentile 0.11-0.18 at 100 rows (8-19 % of samples above 0.1), 0.064-0.067
# at 200 (0-3 %). docs/scoring.md's "Scoring runs" states the same.
MIN_DRIFT_ROWS = 200
# The run tag naming an int8 variant's fp32 source training run (int8/build.py's lineage tags): its baseline's run.
SOURCE_RUN_TAG = "source_run_id"


def baseline(encoded) -> dict:
    """The drift baseline training logs, from its tokenized splits (data.tokenize): the test split's label counts
    and its texts per token count (after truncation, special tokens included, as `scoring.scorer.token_lengths` counts).

    Both from the test split, one population: the English train split's texts are longer than the test split's
    (token-length PSI 0.25 between the two), so lengths from the train split made the test split itself, scored
    by its own model, read as a large shift.
    """
    test = encoded["test"]
    return {
        "labels": list(LABELS),
        "test_label_counts": np.bincount(np.asarray(test["labels"], dtype=int), minlength=len(LABELS)).tolist(),
        "token_length_counts": np.bincount([len(ids) for ids in test["input_ids"]]).tolist(),
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


def baseline_run_id(model_run_id: str | None) -> str | None:
    """The run holding the model's drift baseline: its own, or for an int8 variant its source's training run."""
    if model_run_id is None:
        return None
    try:
        source = mlflow.MlflowClient().get_run(model_run_id).data.tags.get(SOURCE_RUN_TAG)
    except mlflow.exceptions.MlflowException as exc:  # a deleted run: _baseline says there is none
        log.debug("cannot read run %s: %s", model_run_id, one_line(exc))
        return model_run_id
    return source or model_run_id


def load_baseline(run_id: str | None) -> dict | str:
    """The training run's drift baseline, or why there is none (a note, never an error)."""
    if run_id is None:
        return "the model is a local directory, not a registered version or a run's model"
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{BASELINE_ARTIFACT}")
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        log.debug("no drift baseline in run %s: %s", run_id, one_line(exc))
        return f"training run {run_id} logged no {BASELINE_ARTIFACT} (trained before drift baselines existed?)"


def check(label_counts: dict[str, int], token_length_counts, model_run_id: str | None) -> dict[str, float | str]:
    """Compare a job's predicted label counts and texts per token count with the baseline of the model trained in
    `model_run_id`, logging each PSI and its plot to the active run; returns each check's PSI, or why it has none."""
    from sentiment_flow import plots

    baseline_run = baseline_run_id(model_run_id)
    reference = load_baseline(baseline_run)
    if isinstance(reference, str):
        mlflow.set_tag("drift", f"skipped: {reference}")
        log.info("Drift skipped: %s", reference)
        return {"drift": f"skipped: {reference}"}
    mlflow.set_tag("drift_baseline_run_id", baseline_run)
    names = [str(edge) for edge in LENGTH_EDGES[:-1]] + [f"{LENGTH_EDGES[-1]}+"]
    # Metric name -> (bin names, baseline counts, this job's counts, plot file, plot title).
    checks: dict[str, tuple] = {
        "drift_label_psi": (
            reference["labels"],
            reference["test_label_counts"],
            [label_counts[label] for label in reference["labels"]],
            "label_drift.png",
            "Predicted labels vs training test split",
        ),
        "drift_token_length_psi": (
            names,
            length_bins(reference["token_length_counts"]),
            length_bins(token_length_counts),
            "token_length_drift.png",
            "Tokens per text vs training test split",
        ),
    }
    drift: dict[str, float | str] = {}
    for metric, (bins, expected, actual, filename, title) in checks.items():
        rows = int(np.sum(actual))  # the Spark engine's token lengths are a sample: its size is what counts
        if rows < MIN_DRIFT_ROWS:
            drift[metric] = f"not enough rows ({rows} < {MIN_DRIFT_ROWS})"
            mlflow.set_tag(metric, drift[metric])
            continue
        drift[metric] = value = psi(expected, actual)
        mlflow.log_metric(metric, value)
        mlflow.log_figure(plots.compare_shares(bins, expected, actual, title, value), f"drift/{filename}")
    mlflow.set_tag("drift", _summary_tag(drift))
    return drift


def _summary_tag(drift: dict[str, float | str]) -> str:
    """The run's `drift` tag: computed, skipped (why), or partly computed (which check had too few rows)."""
    skipped = {metric: note for metric, note in drift.items() if isinstance(note, str)}
    if not skipped:
        return "computed"
    if len(skipped) == len(drift):
        return "skipped: " + "; ".join(sorted(set(skipped.values())))
    # e.g. a Spark job whose token-length sample is smaller than its row count
    return "partly computed: " + "; ".join(f"{k} {v}" for k, v in skipped.items())
