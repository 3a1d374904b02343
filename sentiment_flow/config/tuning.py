"""`tune`'s options (TuneConfig, beside the training's own) and the search space it draws them from."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentiment_flow.config.constants import AUTO, model_name_problem, shortened
from sentiment_flow.errors import UserError

# `tune` searches these TrainConfig fields: a list is a choice, {low, high[, log]} a range (whole numbers for an int
# field). A user's search space (`--search-space`) is searched instead: its names, a subset of these, are searched
# and every other field keeps the training option's value.
SEARCH_SPACE: dict = {
    "learning_rate": {"low": 1e-5, "high": 3e-4, "log": True},
    "epochs": {"low": 1, "high": 4},
    "batch_size": [8, 16, 32],
    "weight_decay": {"low": 0.0, "high": 0.1},
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "label_smoothing": {"low": 0.0, "high": 0.2},
    "max_length": [64, 128, 256],
}
# Pruners by name, fed each epoch's validation macro-F1: median stops a trial below the median of the finished
# trials at the same epoch, halving keeps the best share of trials at each rung (successive halving).
PRUNERS = ("median", "halving", "none")
# The study's database beside a sqlite MLflow store (DIR/mlflow.db -> DIR/optuna.db): Optuna's schema and MLflow's
# are both versioned by Alembic in a table named alembic_version, so one database cannot hold both (either opened
# after the other refuses it).
STUDY_DATABASE = "optuna.db"


@dataclass(frozen=True)
class TuneConfig:
    """How `tune` searches; the training options beside it give every value the search space leaves fixed."""

    trials: int = field(
        default=20,
        metadata={
            "help": "Trials the study runs in all, over every machine and restart: a search stops once this many "
            "completed or were pruned."
        },
    )
    timeout_minutes: float = field(
        default=0.0, metadata={"help": "Start no new trial after this many minutes (0 = no limit)."}
    )
    study: str = field(
        default=AUTO,
        metadata={
            "help": f"Optuna study name; '{AUTO}' = tune-<registered model name>. Machines that name the same "
            "study share its trials; running it again continues it."
        },
    )
    search_space: str = field(
        default="",
        metadata={
            "help": 'JSON (text or a file) such as {"learning_rate": {"low": 1e-5, "high": 1e-4, "log": true}, '
            '"batch_size": [16, 32]}: only these are searched; empty: the default space (docs/tuning.md).'
        },
    )
    pruner: str = field(
        default="median", metadata={"help": f"One of {', '.join(PRUNERS)}: what stops a poor trial after an epoch."}
    )
    storage: str = field(
        default="",
        metadata={
            "help": f"The study's database (an SQLAlchemy URL); empty: {STUDY_DATABASE} beside a sqlite MLflow "
            "store. PostgreSQL: postgresql://USER@HOST:PORT/DB, the password in PGPASSWORD or ~/.pgpass."
        },
    )

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise UserError(f"trials must be at least 1, got {self.trials}.")
        if self.timeout_minutes < 0:
            raise UserError(f"timeout_minutes must be 0 (no limit) or positive, got {self.timeout_minutes}.")
        if self.pruner not in PRUNERS:
            raise UserError(f"Unknown pruner {self.pruner!r}. Use one of: {', '.join(PRUNERS)}.")
        problem = model_name_problem(self.study)
        if problem:
            raise UserError(f"study {shortened(self.study)!r} is not a usable study name: {problem}.")

    def study_name(self, registry_name: str) -> str:
        """The study's name once `auto` is resolved."""
        return f"tune-{registry_name}" if self.study == AUTO else self.study
