"""`tune`: the hyperparameter search, its options the training's (the values it does not search) and TuneConfig's."""

from __future__ import annotations

import dataclasses
import json
import sys

from rich.console import Console
from rich.table import Table

from sentiment_flow.cli.group import cli, config_options, user_errors
from sentiment_flow.config import TrainConfig, TuneConfig

INTERRUPTED_EXIT = 130  # the shell's code for Ctrl-C: the search stopped early, what it found is registered


@cli.command("tune")
@config_options(TrainConfig)
@config_options(TuneConfig)
@user_errors
def tune_command(**options) -> None:
    """Search hyperparameters with Optuna (one MLflow run, a child run per trial) and register the best trial's
    model as a candidate version; prints the `promote` line that compares it with the champion."""
    from sentiment_flow.tuning import tune

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    base = TrainConfig(**{k: v for k, v in options.items() if k in train_fields})
    result = tune(base, TuneConfig(**{k: v for k, v in options.items() if k not in train_fields}))
    table = Table(title=f"Study {result.study}", show_header=False)
    table.add_row("trials", ", ".join(f"{state.lower()} {n}" for state, n in result.counts.items()))
    if result.best_trial is not None:
        table.add_row("best trial", f"{result.best_trial}: validation macro-F1 {result.best_value:.4f}")
        table.add_row("its params", json.dumps(result.best_params))
        for key, value in result.best_test_metrics.items():
            table.add_row(key, f"{value:.4f} (reported, not used to choose)")
        table.add_row("registered", f"{result.registered_model_name} version {result.version}")
    table.add_row("MLflow run", result.run_id)
    table.add_row("study storage", result.storage)
    Console().print(table)
    if result.version is not None:
        Console().print(
            "Compare it with the champion (same-data gate), then promote it:\n"
            f"  sentiment-flow promote {result.registered_model_name} --version {result.version} --alias champion "
            "--dry-run",
            highlight=False,
            soft_wrap=True,
        )
    else:
        Console(stderr=True).print("No trial completed: nothing was registered.", highlight=False)
    if result.interrupted:
        sys.exit(INTERRUPTED_EXIT)
