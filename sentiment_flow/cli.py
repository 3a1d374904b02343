"""`sentiment-flow`: a thin click layer over the library; the only module that reads argv or prints results."""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys

import click
from rich.console import Console
from rich.table import Table

from sentiment_flow.config import TrainConfig
from sentiment_flow.errors import UserError

console = Console(stderr=True)
# config.py postpones annotations, so dataclass field types arrive as strings.
OPTION_TYPES = {"str": str, "int": int, "float": float}


def user_errors(func):
    """Print a UserError as one line (no traceback) and exit with its code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)

    return wrapper


def config_options(config_cls):
    """One click option per dataclass field, with its default and help: the options cannot drift."""

    def decorate(func):
        for field in reversed(dataclasses.fields(config_cls)):
            func = click.option(
                f"--{field.name.replace('_', '-')}",
                field.name,
                type=OPTION_TYPES[field.type],
                default=field.default,
                show_default=True,
                help=field.metadata["help"],
            )(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="sentiment-flow")
def cli(verbose: bool) -> None:
    """Fine-tune transformer sentiment classifiers and run them through MLflow."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@config_options(TrainConfig)
@user_errors
def train(**options) -> None:
    """Fine-tune, evaluate, track to MLflow + W&B, and register the model."""
    from sentiment_flow.train import train as run_training

    result = run_training(TrainConfig(**options))
    if result is None:  # a non-main process of a torchrun/accelerate job: the main one reports
        return
    table = Table(title=f"Registered {result.model_uri}", show_header=False)
    for key in ("test_accuracy", "test_f1_macro", "test_f1_weighted"):
        table.add_row(key, f"{result.metrics[key]:.4f}")
    table.add_row("MLflow run", result.run_id)
    table.add_row("W&B run", result.wandb_run_path)
    Console().print(table)


def main() -> None:
    cli(prog_name="sentiment-flow")


if __name__ == "__main__":
    main()
