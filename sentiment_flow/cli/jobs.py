"""The commands that run a job and record it as an MLflow run: train, score and optimize."""

from __future__ import annotations

import os

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sentiment_flow.cli.group import cli, config_options, optional_flag, user_errors
from sentiment_flow.config import (
    HEADLINE_METRICS,
    SCORING_EXPERIMENT,
    SPARK_MASTER,
    OptimizeConfig,
    ScoreConfig,
    TrainConfig,
)
from sentiment_flow.scoring.engines import ENGINES


@cli.command("train")
@config_options(TrainConfig)
@user_errors
def train_command(**options) -> None:
    """Fine-tune, evaluate, track to MLflow + W&B, and register the model."""
    from sentiment_flow.training import train

    result = train(TrainConfig(**options))
    if result is None:  # a non-main process of a torchrun/accelerate job: the main one reports
        return
    table = Table(title=f"Registered {result.model_uri}", show_header=False)
    for key in HEADLINE_METRICS:
        table.add_row(key, f"{result.metrics[key]:.4f}")
    table.add_row("MLflow run", result.run_id)
    table.add_row("W&B run", result.wandb_run_path)
    Console().print(table)


@cli.command()
@click.argument("model_uri")
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@optional_flag("--probabilities", help="Also write prob_positive, prob_neutral, prob_negative.")
@optional_flag("--overwrite", help="Replace OUTPUT if it exists.")
@click.option(
    "--engine",
    type=click.Choice(list(ENGINES)),
    default="local",
    show_default=True,
    help=" ".join(f"{name}: {engine.description}" for name, engine in ENGINES.items()),
)
@click.option(
    "--spark-master",
    default=SPARK_MASTER,
    show_default=True,
    help="Spark master URL for --engine spark (ignored under spark-submit, whose --master decides).",
)
@click.option(
    "--experiment-name",
    default="",
    help=f"MLflow experiment of the scoring run [default: {SCORING_EXPERIMENT}]. Under `mlflow run`, the "
    "run is the one it created, in the experiment it chose (mlflow run --experiment-name): empty means that "
    "one, another name is refused.",
)
@config_options(ScoreConfig)
@user_errors
def score(
    model_uri: str,
    input_path: str,
    output_path: str,
    probabilities: bool,
    overwrite: bool,
    engine: str,
    spark_master: str,
    experiment_name: str,
    **options,
) -> None:
    """Score INPUT (CSV or Parquet, by its name) with MODEL_URI into OUTPUT: every input column and row, plus
    label, score and the model version. The job is recorded as one MLflow run, with drift against training.

    MODEL_URI is models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a local model directory.
    OUTPUT appears only once every row is written.
    """
    from sentiment_flow.scoring import runs

    config, chosen = ScoreConfig(**options), ENGINES[engine]
    given = {"spark_master": spark_master}  # options that only some engines take
    engine_options = {name: given[name] for name in chosen.options}
    with runs.scoring_run(experiment_name, f"score-{os.path.basename(input_path.rstrip('/'))}") as run_id:
        summary = chosen.run(
            model_uri,
            input_path,
            output_path,
            config,
            probabilities=probabilities,
            overwrite=overwrite,
            **engine_options,
        )
        local = "://" not in input_path
        params = {"engine": engine, "output_path": output_path, **engine_options}
        drift = runs.record(summary, model_uri, os.path.abspath(input_path) if local else input_path, params)
    table = Table(title=f"Scored {escape(str(summary.output))}", show_header=False)
    table.add_row("model", escape(summary.model_version))
    table.add_row("rows", f"{summary.rows:,} in {summary.seconds:.1f} s ({summary.rows / summary.seconds:,.0f} rows/s)")
    table.add_row("labels", ", ".join(f"{label} {n:,}" for label, n in summary.label_counts.items()))
    if summary.blank:
        table.add_row("empty text", f"{summary.blank:,} rows (scored like any text, as mlflow models serve does)")
    if summary.accuracy is not None:
        table.add_row("accuracy", f"{summary.accuracy:.4f} on {summary.labelled:,} labelled rows")
        table.add_row("macro-F1", f"{summary.f1_macro:.4f}")
    elif options["label_column"]:
        table.add_row("accuracy", f"none of the {options['label_column']!r} values is a known label")
    for name, value in drift.items():  # a PSI, or why there is none (too few rows, no baseline)
        table.add_row(
            name.replace("_", " "), escape(value) if isinstance(value, str) else f"{value:.4f} (PSI vs training)"
        )
    table.add_row("MLflow run", run_id)
    Console().print(table)


@cli.command()
@click.argument("model_uri")
@click.option(
    "--data",
    default=None,
    help="Data folder (or Hub id) holding the source's test split; default: "
    "where its training read it (the version's data_source tag). Its sha256 must match data_hash.",
)
@config_options(OptimizeConfig)
@optional_flag("--again", help="Build and register another variant even if this version already has one.")
@user_errors
def optimize(model_uri: str, data: str | None, again: bool, **options) -> None:
    """Build the int8 (ONNX Runtime) variant of MODEL_URI and register it as NAME-int8 if it passes the gate.

    MODEL_URI is models:/NAME/VERSION or models:/NAME@ALIAS. The gate: on the source's test split, macro-F1
    within --max-f1-drop of the fp32 model's and labels equal to its on at least --min-agreement of rows;
    otherwise nothing is registered and the command exits 1.
    """
    from sentiment_flow.int8 import optimize as build_int8

    config = OptimizeConfig(**options)
    result = build_int8(model_uri, data, config, again)
    table = Table(title=f"Registered {result.model_uri}", show_header=False)
    table.add_row("source", result.source_uri)
    table.add_row("test macro-F1", f"{result.metrics['test_f1_macro']:.4f} (fp32 {result.fp32_f1_macro:.4f})")
    table.add_row("labels equal to fp32", f"{result.agreement:.2%} of {result.rows:,} test rows")
    table.add_row(
        "scored again in fp32", f"{result.fallback_share:.1%} of test rows (margin under {config.fallback_margin:g})"
    )
    table.add_row("MLflow run", result.run_id)
    Console().print(table)
