"""A row of the promotion gate table, its outcomes and the formatting every gate shares."""

from __future__ import annotations

from dataclasses import dataclass

from sentiment_flow.errors import one_line

PASS, FAIL, FORCED, SKIPPED = "pass", "fail", "forced", "skipped"
# Gates 2-3 and max_ece; --force never skips readiness, an unmeasured gate or the smoke test.
FORCEABLE = ("min_f1_macro", "no_regression", "per_class_f1", "significance", "max_ece")


@dataclass(frozen=True)
class Gate:
    """One row of the gate table."""

    gate: str
    candidate: str
    champion: str
    threshold: str
    outcome: str  # pass | fail | forced (failed, overridden by --force) | skipped (an earlier gate failed)
    note: str = ""


def outcome(ok: bool, force: bool, measurable: bool) -> str:
    if ok:
        return PASS
    return FORCED if force and measurable else FAIL


def number(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def short(exc: BaseException) -> str:
    text = one_line(exc)
    return text if len(text) <= 300 else text[:297] + "..."
