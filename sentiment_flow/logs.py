"""Where log records and Python warnings go: the terminal gets this project's lines and real warnings; the
libraries' chatter goes to a log file per command (`log_file`), or everything to the terminal with -v."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from pathlib import Path

CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
LOG_FILE_BYTES = 5_000_000  # per command: the file rotates once past this, keeping one older file
PROJECT_LOGGER = "sentiment_flow"
# Loggers MLflow gives a stderr handler of its own at import (and stops from propagating): they are taken over.
MLFLOW_LOGGERS = ("mlflow", "alembic", "huey", "sqlalchemy.engine")

# Library warnings (WARNING level: errors always show) that say nothing about the user's data or results, each as (logger,
# message regex); they go to the log file only. Every other warning reaches the terminal: sklearn's
# UndefinedMetricWarning (a class never predicted), MLflow's and W&B's errors, this project's own warnings
# (rows dropped, a requirement left out).
NOISE = tuple(
    (logger, re.compile(pattern))
    for logger, pattern in (
        # Importing a PythonModel without type hints on predict (int8/model.py): about this project's code.
        ("py.warnings", r"Add type hints to the `predict` method"),
        # Logging a local CSV as a dataset input matches two resolvers of the same class.
        ("py.warnings", r"dataset source can be interpreted in multiple ways"),
        # The logged datasets' label column holds ids 0-2 by design, never missing (data.py refuses a row without one).
        ("py.warnings", r"Inferred schema contains integer column"),
        # torch.onnx.export tracing the model for the int8 variant; the gate compares the result on the test split.
        ("py.warnings", r"TracerWarning: |Exporting aten::\w+ operator"),
        # onnxruntime.quantization (on the root logger); the int8 gate measures what quantization did.
        ("root", r"Please consider to run pre-processing before quantization"),
        # mlflow.transformers looks a local or packaged model's name up on the Hub.
        ("mlflow.transformers", r"model card could not be retrieved|Unable to find license information"),
        # MLflow guesses a model type from text labels and cannot: the evaluation is told it is a classifier.
        ("mlflow.models.evaluation", r"the model type looks like None"),
    )
)


_MLFLOW_FILTERS: list = []  # Filter objects or callables, as Handler.filters holds them


def log_file(command: str) -> Path:
    """The log file of `command` (train, score, ...): $XDG_STATE_HOME/sentiment-flow/COMMAND.log, by default
    under ~/.local/state."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "sentiment-flow" / f"{command}.log"


def is_noise(record: logging.LogRecord) -> bool:
    """Whether `record` is library chatter: a library's INFO or lower, or one of the NOISE warnings (never an
    error)."""
    if record.name == PROJECT_LOGGER or record.name.startswith(PROJECT_LOGGER + "."):
        return False
    if record.levelno != logging.WARNING:
        return record.levelno < logging.WARNING  # a library's error always reaches the terminal
    message = record.getMessage()
    return any(
        (record.name == logger or record.name.startswith(logger + ".")) and pattern.search(message)
        for logger, pattern in NOISE
    )


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == "py.warnings":  # already "file:line: Category: message" and the source line
            return record.getMessage().rstrip()
        return super().format(record)


class _Stderr(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record, not as it was at setup (click's CliRunner swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Filter(logging.Filter):
    def __init__(self, noise: bool):
        super().__init__()
        self.noise = noise

    def filter(self, record: logging.LogRecord) -> bool:
        return is_noise(record) == self.noise


def setup(command: str | None, verbose: bool) -> None:
    """Route logging and warnings for one CLI command: with `verbose`, everything (DEBUG up) to stderr; otherwise
    this project's INFO lines and the warnings not in NOISE to stderr, the rest to `log_file(command)`.

    Call it after importing mlflow, whose loggers are then taken over. Also silenced at their source unless
    verbose: transformers (its LOAD REPORT of newly initialised classifier weights) and W&B's banner and
    summary (TRANSFORMERS_VERBOSITY, WANDB_QUIET; a value the user set wins).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_sentiment_flow", False)]:
        root.removeHandler(handler)
        handler.close()
    # MLflow drops records on threads that asked for quiet: keep its filter on the handlers that replace its own.
    _MLFLOW_FILTERS[:] = [f for h in logging.getLogger("mlflow").handlers for f in h.filters] or _MLFLOW_FILTERS
    for name in MLFLOW_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True

    handlers: list[logging.Handler] = [_Stderr()]
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("WANDB_QUIET", "true")
        handlers[0].addFilter(_Filter(noise=False))
        if command:
            path = log_file(command)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass
            # No writable home (a service user) or another user's file: the chatter is dropped, as a handler
            # failing would print a traceback per record; -v still shows it.
            if os.access(path if path.exists() else path.parent, os.W_OK):
                file_handler = logging.handlers.RotatingFileHandler(
                    path, maxBytes=LOG_FILE_BYTES, backupCount=1, encoding="utf-8", delay=True
                )
                file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
                file_handler.addFilter(_Filter(noise=True))
                handlers.append(file_handler)
    handlers[0].setFormatter(_Formatter(CONSOLE_FORMAT))
    for handler in handlers:
        handler._sentiment_flow = True  # type: ignore[attr-defined]  # the mark setup() removes by
        for mlflow_filter in _MLFLOW_FILTERS:
            handler.addFilter(mlflow_filter)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)  # warnings become py.warnings records, routed like any other
