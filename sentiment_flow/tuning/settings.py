"""What a search is parameterised by (TuneConfig: each field one `tune` option and one MLproject parameter, beside
the training's own), the names it records under, and the pruners. The search space itself is config.SEARCH_SPACE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sentiment_flow.config import AUTO, model_name_problem, shortened
from sentiment_flow.errors import UserError

# Pruners by name, fed each epoch's validation macro-F1: median stops a trial below the median of the finished
# trials at the same epoch, halving keeps the best share of trials at each rung (successive halving).
PRUNERS = ("median", "halving", "none")
# The study's database beside a sqlite MLflow store (DIR/mlflow.db -> DIR/optuna.db): Optuna's schema and MLflow's
# are both versioned by Alembic in a table named alembic_version, so one database cannot hold both (either opened
# after the other refuses it).
STUDY_DATABASE = "optuna.db"
# Tags of the parent run, the trial runs and the registered version; user attributes of the Optuna trials.
STUDY_TAG = "optuna.study"
TRIAL_TAG = "optuna.trial"
STATE_TAG = "optuna.trial_state"
PARAM_TAG_PREFIX = "optuna.param."
RUN_ATTR = "mlflow_run_id"
REGISTRATION_ATTR = "registration"
TEST_ATTR = "test_metrics"  # reported beside each trial, never read to choose one
DEFINITION_ATTR = "definition"  # the search space and fixed training settings a study was created with


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
