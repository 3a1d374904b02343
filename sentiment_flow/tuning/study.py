"""The Optuna study: its database (beside the MLflow store, never inside it), its sampler and pruner, and the
check that a study is continued with the search space and training settings it was created with."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import mlflow
from sqlalchemy.engine import make_url

from sentiment_flow.config import STUDY_DATABASE
from sentiment_flow.errors import UserError, redact_uri
from sentiment_flow.store import sqlite_folder_locked
from sentiment_flow.tuning.settings import DEFINITION_ATTR

log = logging.getLogger(__name__)

# A trial whose process died (kill -9, a lost machine) stops beating; the next trial any machine starts marks it
# FAIL after the grace period, so it neither counts towards the budget nor stays RUNNING.
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 180
# sqlite: how long a writer waits for another machine's write to the study before failing.
SQLITE_TIMEOUT_SECONDS = 60


def storage_url(storage: str) -> str:
    """The study database's URL: `storage`, else STUDY_DATABASE beside a sqlite tracking store.

    Refuses a URL holding a password (MLflow, Optuna and SQLAlchemy print URLs) and the tracking store's own
    database (both keep their schema version in a table named alembic_version).
    """
    tracking = mlflow.get_tracking_uri()
    if not storage:
        if not tracking.startswith("sqlite:"):
            raise UserError(
                f"The tracking store {redact_uri(tracking)} is no sqlite file, so there is no folder to keep the study "
                f"in: pass --storage postgresql://USER@HOST:PORT/DB (a database of its own, the password in "
                "PGPASSWORD or ~/.pgpass), or sqlite:///PATH/optuna.db on a disk every machine shares."
            )
        database = make_url(tracking).database or ""
        return f"sqlite:///{Path(database).resolve().parent / STUDY_DATABASE}"
    try:
        url = make_url(storage)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises ArgumentError or ValueError for a malformed URL
        raise UserError(f"storage {redact_uri(storage)!r} is not a database URL such as sqlite:///optuna.db.") from None
    if url.password is not None:
        raise UserError(
            "storage carries a password, and URLs get printed: remove it from the URL and put it in PGPASSWORD or "
            "a ~/.pgpass line (libpq reads both)."
        )
    if _same_database(url, tracking):
        raise UserError(
            f"storage {redact_uri(storage)} is the MLflow store's own database: Optuna and MLflow both keep their "
            "schema version in its alembic_version table. Use a database of its own (docs/tuning.md)."
        )
    return storage


def _same_database(url, tracking: str) -> bool:
    try:
        other = make_url(tracking)
    except Exception:  # noqa: BLE001 - an http(s) tracking URI is no database URL: then it is not the same one
        return False
    if url.get_backend_name() != other.get_backend_name():
        return False
    if url.get_backend_name() == "sqlite":
        return Path(url.database or "").resolve() == Path(other.database or "").resolve()
    return (url.host, url.port, url.database) == (other.host, other.port, other.database)


def open_study(name: str, url: str, definition: dict[str, Any], pruner: str, trials: int):
    """Create study `name` in `url`, or load it; refuse one created with another `definition`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI reports trials itself
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite:") else {}
    with sqlite_folder_locked(url), warnings.catch_warnings():  # a new database: one process creates its tables
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats, stable since 2.9
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
        )
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            # No seed: machines sharing a study must not propose the same trials; constant_liar keeps parallel
            # workers from sampling beside each other's running trials.
            sampler=optuna.samplers.TPESampler(constant_liar=True),
            pruner=make_pruner(pruner, trials),
            load_if_exists=True,
        )
        recorded = study.user_attrs.get(DEFINITION_ATTR)
        if recorded is None:
            study.set_user_attr(DEFINITION_ATTR, definition)
    if recorded is not None and recorded != definition:
        changed = sorted(key for key in {*recorded, *definition} if recorded.get(key) != definition.get(key))
        raise UserError(
            f"Study {name!r} was created with another {', '.join(changed)}: pass the same ones to continue it, or "
            "name a new study (--study NAME)."
        )
    return study


def make_pruner(name: str, trials: int):
    """The pruner `name` (settings.PRUNERS); the median pruner waits for a quarter of the trials (1 to 5)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, trials // 4)), n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()
