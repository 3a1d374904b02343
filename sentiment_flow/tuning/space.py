"""The search space: read a user's (JSON text or file) or the default config.SEARCH_SPACE, check it, and draw a
trial's training values from it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sentiment_flow.config import SEARCH_SPACE, TrainConfig
from sentiment_flow.errors import UserError, one_line

RANGE_KEYS = {"low", "high", "log"}


def load_space(text: str) -> dict[str, Any]:
    """The search space `text` gives (JSON, or the path of a JSON file), else config.SEARCH_SPACE; checked."""
    if not text.strip():
        return SEARCH_SPACE
    source = "--search-space"
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise UserError(f"search_space {text!r} is neither a JSON object nor a file: pass one of them.")
        source, text = str(path), path.read_text(encoding="utf-8")
    try:
        space = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"search_space ({source}) is not valid JSON: {one_line(exc)}.") from None
    if not isinstance(space, dict) or not space:
        raise UserError(f"search_space ({source}) must be a non-empty JSON object of parameter: range or [choices].")
    for name, spec in space.items():
        _check_entry(name, spec)
    return space


def _check_entry(name: str, spec: Any) -> None:
    if name not in SEARCH_SPACE:
        raise UserError(
            f"Unknown parameter {name!r} in the search space: use some of {', '.join(SEARCH_SPACE)} (docs/tuning.md)."
        )
    if isinstance(spec, list):
        if not spec or any(not isinstance(value, (int, float)) or isinstance(value, bool) for value in spec):
            raise UserError(f"search_space {name!r}: a choice list needs at least one number, got {spec!r}.")
        return
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - RANGE_KEYS:
        raise UserError(
            f'search_space {name!r}: use [choices] or {{"low": L, "high": H[, "log": true]}}, got {spec!r}.'
        )
    if not all(isinstance(spec[key], (int, float)) for key in ("low", "high")) or not spec["low"] < spec["high"]:
        raise UserError(f"search_space {name!r}: low must be a number below high, got {spec!r}.")
    if spec.get("log") and spec["low"] <= 0:
        raise UserError(f"search_space {name!r}: a log range needs low > 0, got {spec['low']}.")


def check_values(space: dict[str, Any], base: TrainConfig) -> None:
    """Refuse, before any trial, a range or choice the training would refuse (TrainConfig's own checks)."""
    for name, spec in space.items():
        for value in spec if isinstance(spec, list) else (spec["low"], spec["high"]):
            as_config(base, {name: value})


def as_config(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """`base` with `values` put in, each converted to its field's type (learning_rate is text: it may be auto)."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    converted: dict[str, Any] = {
        name: str(value) if types[name] == "str" else int(value) if types[name] == "int" else float(value)
        for name, value in values.items()
    }
    return dataclasses.replace(base, **converted)


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    """The trial's values for the space's parameters, drawn by the study's sampler."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    values = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            values[name] = trial.suggest_categorical(name, spec)
        elif types[name] == "int":
            values[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], log=bool(spec.get("log")))
    return values
