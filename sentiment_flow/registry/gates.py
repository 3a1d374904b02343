"""The promotion gates: each reads the registry (and, for the smoke test, loads the model) and returns one
row of the gate table; none writes."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.types import DataType

from sentiment_flow.config import CANARY_TEXTS, CHAMPION, EPSILON, KEY_METRICS, LABELS, PromotionConfig
from sentiment_flow.registry.comparison import same_data_gates, unmeasured_gates
from sentiment_flow.registry.evaluations import eval_set
from sentiment_flow.registry.rows import FAIL, PASS, SKIPPED, Gate, number, outcome, short
from sentiment_flow.store import FINISHED, READY, Evidence, evidence, models_uri, source_run

# Written by training when it registers a version, after every other step; a version without it was not
# registered by a training that got that far.
TRAINING_TAGS = ("mlflow_run_id",)


def run_gates(
    client: MlflowClient, candidate: ModelVersion, champion: ModelVersion | None, config: PromotionConfig, force: bool
) -> list[Gate]:
    """The gate table for `candidate` against `champion`, in order; later gates are skipped once one fails."""
    mine = evidence(client, candidate)
    theirs = evidence(client, champion) if champion else None
    champion_status = champion.status if champion else "none"
    # 1. Registered completely, by a training that finished, with the metrics the next gates need.
    unready = _unready(candidate, mine)
    rows = [Gate("ready", candidate.status, champion_status, READY, FAIL if unready else PASS, unready)]
    missing = [key for key in KEY_METRICS if key not in mine.metrics]
    rows.append(
        Gate(
            "test_metrics",
            _format_metrics(mine.metrics),
            _format_metrics(theirs.metrics) if theirs else "-",
            ", ".join(KEY_METRICS),
            FAIL if missing else PASS,
            f"{', '.join(missing)} in neither {mine.searched}; log it on the run or tag the version"
            if missing
            else f"from {mine.source}",
        )
    )
    # 2-3. Good enough in absolute terms and not worse than what serves now: on one frozen evaluation set
    # where there is one (--eval-data, else the champion's logged test dataset), else on the metrics each
    # training recorded.
    other = champion if champion and str(champion.version) != str(candidate.version) else None
    no_champion = f"the candidate is the {CHAMPION}" if champion and not other else f"no {CHAMPION} yet"
    data, why = None, "an earlier gate failed"
    if not any(row.outcome == FAIL for row in rows):
        data, why = eval_set(client, other, config.eval_data)
    if data:
        rows += same_data_gates(client, candidate, other, no_champion, data, config, force)
    else:
        f1 = mine.metrics.get("test_f1_macro")
        rows.append(
            Gate(
                "min_f1_macro",
                number(f1),
                "-",
                f">= {config.min_f1_macro:.4f}",
                outcome(f1 is not None and f1 >= config.min_f1_macro - EPSILON, force, f1 is not None),
            )
        )
        rows.append(_regression_gate(candidate, mine, champion, theirs, config.tolerance, force, why))
        rows += unmeasured_gates(config, why if other else no_champion)
    if config.max_ece < 1:  # off by default: versions trained before calibration have no test_ece
        rows.append(_ece_gate(client, candidate, config.max_ece, force))
    # 4. Serves: a failed gate above already refuses, so the (slow) load is spared.
    if any(row.outcome == FAIL for row in rows):
        note = "not run: an earlier gate failed"
        return rows + [Gate(gate, "-", "-", "-", SKIPPED, note) for gate in ("signature", "smoke_test")]
    uri = models_uri(candidate.name, candidate.version)
    return rows + [_signature_gate(uri), _smoke_gate(uri)]


def _regression_gate(
    candidate: ModelVersion,
    mine: Evidence,
    champion: ModelVersion | None,
    theirs: Evidence | None,
    tolerance: float,
    force: bool,
    why: str,
) -> Gate:
    """no_regression on the test metrics each training recorded: the fallback where no same-data set exists."""
    f1 = mine.metrics.get("test_f1_macro")
    if champion is None or theirs is None:
        return Gate("no_regression", number(f1), "none", "-", PASS, f"no {CHAMPION} yet")
    label = f"v{champion.version}"
    if str(champion.version) == str(candidate.version):
        return Gate("no_regression", number(f1), label, "-", PASS, f"the candidate is the {CHAMPION}")
    best = theirs.metrics.get("test_f1_macro")
    if best is None:
        return Gate(
            "no_regression",
            number(f1),
            f"{label}: missing",
            "-",
            outcome(False, force, True),
            f"{CHAMPION} {label} has no test_f1_macro to compare with",
        )
    threshold = best - tolerance
    notes = [
        f"compared the metrics each training recorded, as {why}; pass --eval-data PATH to compare on the same data"
    ]
    if not (mine.data_hash and theirs.data_hash):
        notes.append("cannot tell whether both were tested on the same data: a data_hash tag is missing")
    elif mine.data_hash != theirs.data_hash:
        notes.append(
            f"tested on different data (data_hash {mine.data_hash[:12]} vs {theirs.data_hash[:12]}): "
            "the comparison is indicative only"
        )
    ok = f1 is not None and f1 >= threshold - EPSILON
    bound = f">= {threshold:.4f}" + (f" (tolerance {tolerance:g})" if tolerance else "")
    return Gate(
        "no_regression",
        number(f1),
        f"{best:.4f} ({label})",
        bound,
        outcome(ok, force, f1 is not None),
        "; ".join(notes),
    )


def _ece_gate(client: MlflowClient, candidate: ModelVersion, max_ece: float, force: bool) -> Gate:
    """max_ece: the candidate's calibration on its test split (test_ece, logged by training's calibration)."""
    run = source_run(client, candidate)
    ece = run.data.metrics.get("test_ece") if run else None
    note = "" if ece is not None else "no test_ece on its run: trained before calibration? train it again"
    return Gate(
        "max_ece",
        number(ece),
        "-",
        f"<= {max_ece:.4f}",
        outcome(ece is not None and ece <= max_ece + EPSILON, force, ece is not None),
        note,
    )


def _signature_gate(uri: str) -> Gate:
    expected = "one string column"
    try:
        signature = mlflow.models.get_model_info(uri).signature
    except Exception as exc:  # noqa: BLE001 - whatever stops reading the MLmodel is what this gate reports
        return Gate("signature", "-", "-", expected, FAIL, f"cannot read the model: {short(exc)}")
    if signature is None or signature.inputs is None:
        return Gate("signature", "none", "-", expected, FAIL, "log the model with a signature")
    inputs = signature.inputs
    columns = [] if inputs.is_tensor_spec() else inputs.inputs
    ok = len(columns) == 1 and columns[0].type == DataType.string
    return Gate("signature", str(inputs), "-", expected, PASS if ok else FAIL, "" if ok else "serving sends text")


def _smoke_gate(uri: str) -> Gate:
    from sentiment_flow.scoring.scorer import canary_answers

    expected = f"{len(CANARY_TEXTS)} rows in {{{', '.join(LABELS)}}}"
    try:
        labels, unknown = canary_answers(mlflow.pyfunc.load_model(uri))
    except KeyError as exc:
        return Gate("smoke_test", "-", "-", expected, FAIL, str(exc.args[0]))
    except Exception as exc:  # noqa: BLE001 - a model that fails to load or predict is exactly what this gate catches
        return Gate("smoke_test", "-", "-", expected, FAIL, f"load/predict failed: {short(exc)}")
    notes = []
    if len(labels) != len(CANARY_TEXTS):
        notes.append(f"{len(labels)} predictions for {len(CANARY_TEXTS)} texts")
    if unknown:
        notes.append(f"unknown labels {', '.join(unknown)}: the model's config needs id2label = {list(LABELS)}")
    return Gate("smoke_test", ", ".join(labels[:5]), "-", expected, FAIL if notes else PASS, "; ".join(notes))


def _unready(mv: ModelVersion, found: Evidence) -> str:
    """Why `mv` is not ready to serve ("" when it is)."""
    if mv.status != READY:
        return "registration has not finished (or failed); register it again"
    if found.run_status not in (None, FINISHED):
        return f"its source run {mv.run_id} is {found.run_status}, not {FINISHED}: the training did not complete"
    missing = [tag for tag in TRAINING_TAGS if tag not in mv.tags]
    if missing:
        return f"no {', '.join(missing)} tag: not registered by a training that completed"
    return ""


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key.removeprefix('test_')}={value:.4f}" for key, value in metrics.items()) or "none"
