"""The int8 variant's gate: on its source's test split, macro-F1 within the allowed drop of fp32's and labels equal
to fp32's on enough rows; a variant that misses it is refused (exit 1) and registered nowhere."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow

from sentiment_flow.config import EPSILON
from sentiment_flow.errors import Refused


def gate_misses(
    fp32_f1: float, int8_f1: float, agreement: float, rows: int, max_f1_drop: float, min_agreement: float
) -> list[str]:
    """What the variant missed the gate by, one phrase per rule (empty when it passes)."""
    misses = []
    drop = fp32_f1 - int8_f1
    if drop > max_f1_drop + EPSILON:
        misses.append(
            f"macro-F1 {int8_f1:.4f} is {drop:.4f} below fp32's {fp32_f1:.4f}, {drop - max_f1_drop:.4f} more than "
            f"the {max_f1_drop:g} allowed"
        )
    if agreement < min_agreement - EPSILON:
        misses.append(
            f"labels agree with fp32 on {agreement:.2%} of {rows} test rows, {min_agreement - agreement:.2%} short "
            f"of the {min_agreement:.0%} required"
        )
    return misses


def check_gate(source_uri: str, measured: Measured, rows: int, max_f1_drop: float, min_agreement: float) -> None:
    """Tag the run with the gate's outcome; raise Refused (exit 1) when the variant missed it."""
    misses = gate_misses(
        measured.fp32_f1, measured.metrics["test_f1_macro"], measured.agreement, rows, max_f1_drop, min_agreement
    )
    if misses:
        mlflow.set_tag("int8_gate", "refused: " + "; ".join(misses))
        raise Refused(
            f"The int8 variant of {source_uri} was not registered: {'; '.join(misses)}. Keep serving the fp32 "
            "model, score more rows in fp32 with a larger --fallback-margin, or loosen the gate deliberately with "
            "--max-f1-drop / --min-agreement."
        )
    mlflow.set_tag("int8_gate", "passed")


@dataclass(frozen=True)
class Measured:
    """The variant against its fp32 source on the test split."""

    fp32_f1: float
    metrics: dict[str, float]  # the variant's test_* metrics
    agreement: float  # share of test rows whose label equals fp32's
    fallback_share: float  # share of test rows the fp32 graph scored again
