"""Gates 2-3 on one frozen evaluation set: the candidate's and the champion's `mlflow.models.evaluate` results
checked by `mlflow.validate_evaluation_results`, per class, and with a paired bootstrap interval."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import MetricThreshold
from mlflow.models.evaluation import EvaluationResult
from mlflow.models.evaluation.validation import ModelValidationFailedException

from sentiment_flow.config import EPSILON, LABELS, PromotionConfig
from sentiment_flow.evaluation import TARGET, bootstrap_f1_difference
from sentiment_flow.registry.evaluations import EvalSet, Evaluation, evaluate_version
from sentiment_flow.registry.rows import FAIL, PASS, Gate, number, outcome, short

SAME_DATA_GATES = ("min_f1_macro", "no_regression", "per_class_f1", "significance")


def same_data_gates(
    client: MlflowClient,
    candidate: ModelVersion,
    champion: ModelVersion | None,
    no_champion: str,
    data: EvalSet,
    config: PromotionConfig,
    force: bool,
) -> list[Gate]:
    """The rows of SAME_DATA_GATES; `no_champion` says why there is none to compare with when `champion` is None."""
    try:
        mine = evaluate_version(client, candidate, data)
        theirs = evaluate_version(client, champion, data) if champion else None
    except Exception as exc:  # noqa: BLE001 - a model that cannot be evaluated is refused, like one that cannot load
        note = f"evaluation on {data.description} failed: {short(exc)}"
        return [Gate(gate, "-", "-", "-", FAIL, note) for gate in SAME_DATA_GATES]
    f1 = mine.metrics["f1_macro"]
    floor = _passes("f1_macro", config.min_f1_macro, mine)
    where = f"on {data.description}; evaluation run {mine.run_id}"
    rows = [Gate("min_f1_macro", number(f1), "-", f">= {config.min_f1_macro:.4f}", outcome(floor, force, True), where)]
    if theirs is None or champion is None:
        return rows + [Gate(gate, number(f1), "none", "-", PASS, no_champion) for gate in SAME_DATA_GATES[1:]]

    label = f"v{champion.version}"
    best = theirs.metrics["f1_macro"]
    # MetricThreshold's min_absolute_change only asks for a gain; "no worse than the champion minus the
    # tolerance" is an absolute threshold taken from the champion's result on the same rows.
    threshold = best - config.tolerance
    ok = _passes("f1_macro", threshold, mine)
    bound = f">= {threshold:.4f}" + (f" (tolerance {config.tolerance:g})" if config.tolerance else "")
    note = f"same data: {data.description}; evaluation runs {mine.run_id} and {theirs.run_id}"
    rows.append(Gate("no_regression", number(f1), f"{best:.4f} ({label})", bound, outcome(ok, force, True), note))

    below = [c for c in LABELS if not _passes(f"f1_{c}", theirs.metrics[f"f1_{c}"] - config.per_class_tolerance, mine)]
    rows.append(
        Gate(
            "per_class_f1",
            _per_class(mine),
            _per_class(theirs),
            f">= {label}'s - {config.per_class_tolerance:g} each",
            outcome(not below, force, True),
            f"below the {label}'s: {', '.join(below)}" if below else "",
        )
    )
    return rows + [_significance(data, mine, theirs, config, force)]


def _significance(data: EvalSet, mine: Evaluation, theirs: Evaluation, config: PromotionConfig, force: bool) -> Gate:
    low, high = bootstrap_f1_difference(
        data.frame[TARGET], mine.predictions, theirs.predictions, config.bootstrap_resamples, config.bootstrap_seed
    )
    gain = mine.metrics["f1_macro"] - theirs.metrics["f1_macro"]
    required = config.require_significant
    return Gate(
        "significance",
        f"{gain:+.4f}",
        f"95% CI [{low:+.4f}, {high:+.4f}]",
        "CI above 0" if required else "reported (--require-significant)",
        outcome(low > 0 or not required, force, True),
        f"macro-F1 gain over the champion; {config.bootstrap_resamples} paired bootstrap resamples, "
        f"seed {config.bootstrap_seed}",
    )


def unmeasured_gates(config: PromotionConfig, why: str) -> list[Gate]:
    """per_class_f1 and significance where no same-data evaluation ran: they need one."""
    note = f"not measured: {why}"
    significant = Gate(
        "significance",
        "-",
        "-",
        "CI above 0",
        outcome(False, False, False),
        f"{note}; --require-significant needs a same-data evaluation: pass --eval-data PATH",
    )
    return [
        Gate("per_class_f1", "-", "-", "-", PASS, note),
        significant if config.require_significant else Gate("significance", "-", "-", "-", PASS, note),
    ]


def _passes(metric: str, threshold: float, result: Evaluation) -> bool:
    """Whether `result`'s `metric` clears `threshold` by `mlflow.validate_evaluation_results`."""
    # Same rows, same arithmetic: a tie is exact, but `threshold` itself may carry a subtraction's rounding.
    thresholds = {metric: MetricThreshold(threshold=threshold - EPSILON, greater_is_better=True)}
    try:
        mlflow.validate_evaluation_results(thresholds, EvaluationResult(metrics=result.metrics, artifacts={}))
    except ModelValidationFailedException:
        return False
    return True


def _per_class(result: Evaluation) -> str:
    return ", ".join(f"{label}={result.metrics[f'f1_{label}']:.4f}" for label in LABELS)
