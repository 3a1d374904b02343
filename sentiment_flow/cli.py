"""`sentiment-flow`: a thin click layer over the library; the only module that reads argv or prints results."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import signal
import sys
from pathlib import Path

import click
from rich.console import Console, Group
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from sentiment_flow.config import (
    ALIASES, CHAMPION, HEADLINE_METRICS, INT8_FALLBACK_MARGIN, INT8_MAX_F1_DROP, INT8_MIN_AGREEMENT, INT8_SMOOTH_ALPHA,
    KEY_METRICS, SCORING_EXPERIMENT, SPARK_MASTER, PromotionConfig, ScoreConfig, TrainConfig,
)
from sentiment_flow.errors import UserError, redact_uri, split_credentials
from sentiment_flow.server import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS
from sentiment_flow.server_users import NEW_PASSWORD_VAR, ROLES, permission_denied

console = Console(stderr=True)


class WholeNumber(click.ParamType):
    """An integer that also accepts "2.0": MLproject has no integer type, so `mlflow run` passes floats."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not number.is_integer():
            self.fail(f"{value!r} is not a whole number", param, ctx)
        return int(number)


# config.py postpones annotations, so dataclass field types arrive as strings.
OPTION_TYPES = {"str": str, "int": WholeNumber(), "float": float, "bool": click.BOOL}
AUTH_ERRORS = {
    "UNAUTHENTICATED": "The tracking server refused the request (HTTP 401, not logged in): set "
    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server (a wrong password gets "
    "this answer too).",
}


def optional_flag(name: str, help: str):
    """A flag that also takes true/false, so an MLproject command can pass it as `--flag {param}`."""
    return click.option(name, type=click.BOOL, is_flag=False, flag_value=True, default=False, help=help)


class Terminated(SystemExit):
    """SIGTERM (from `kill`, a scheduler, or `mlflow run` dying): unwinds like Ctrl-C, so cleanups run."""


def _terminate(signum, frame) -> None:
    # Once: under `mlflow run` a second SIGTERM follows when that parent dies (PDEATHSIG), and it must not
    # cut short the cleanup the first one started (partial files, ending the run KILLED).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(128 + signum)


def _die_with_parent() -> None:
    """Under `mlflow run` (which sets MLFLOW_RUN_ID): receive SIGTERM when that process dies.

    `mlflow run` starts the entry point with `bash -c` (bash execs the single command), then only waits for
    it; killed itself, it leaves the entry point running orphaned, still training and registering.
    """
    if sys.platform != "linux" or not os.environ.get("MLFLOW_RUN_ID"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def user_errors(func):
    """Print a UserError or MLflow store failure as one line (no traceback) and exit with its code; first take
    any password out of the store's URI."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from mlflow.exceptions import MlflowException  # imported here: --help stays fast

        from sentiment_flow import tracking

        try:  # here, not in the group: the registry_scripts call their command without it
            _credentials_out_of_uris()
        except UserError as exc:  # before anything, ending a run included, talks to the store
            _fail(exc)
        try:
            result = func(*args, **kwargs)
        except (Terminated, KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # after Ctrl-C too: `mlflow run` then sends SIGTERM
            tracking.end_project_run("KILLED")
            raise
        except MlflowException as exc:
            # A server with --auth answers 401/403 with these codes. Any other store error's text may hold the
            # tracking URI with its password, and a traceback helps no user here. The store is what failed:
            # the project run is left to `mlflow run`, which marks it FAILED.
            # A 403's message names the permission and the resource, read from the refused request.
            error = (
                UserError(permission_denied(exc)) if exc.error_code == "PERMISSION_DENIED"
                else UserError(AUTH_ERRORS[exc.error_code]) if exc.error_code in AUTH_ERRORS
                else tracking.store_error(exc)
            )
            _fail(error)
        except UserError as exc:
            tracking.end_project_run("FAILED")
            _fail(exc)
        # Under `mlflow run`, end its run here too: killed itself, `mlflow run` would leave it RUNNING.
        tracking.end_project_run("FINISHED")
        return result

    return wrapper


def _fail(error: UserError) -> None:
    console.print(f"[bold red]Error:[/] {escape(in_user_syntax(str(error)))}", highlight=False, soft_wrap=True)
    sys.exit(error.exit_code)


def in_user_syntax(text: str) -> str:
    """`text` with its fixes in the syntax of the user: as written (`--eval-data PATH`, `--force`) at a shell, in
    MLproject parameters under `mlflow run` (MLFLOW_RUN_ID set): `-P eval_data=PATH`, `-P force=true`, and a
    `sentiment-flow rollback NAME --alias A` line as `mlflow run . -e rollback -P model_name=NAME -P alias=A`."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return text
    entry_points = _entry_points()
    declared = {option: param for _, _, options in entry_points.values() for option, param in options.items()}
    # One pass: a whole command line takes another entry point's parameters, not the running one's.
    return USER_TEXT.sub(
        lambda m: _as_mlflow_run(m, entry_points) if m["command"] else _as_parameter(m, declared), text
    )


# `--name` and what follows it: an option's value is a placeholder (PATH, V), a number, a quoted or <described>
# value, `...`, a word or path; a flag's value is true or false. The sentence goes on after anything else.
CLI_OPTION = (
    r"(?<![\w-])--(?P<name>[a-z][a-z0-9-]*)"
    r"(?: (?!-)(?P<value>'[^']*'|\"[^\"]*\"|<[^<>]*>|\.\.\.|[./~]*\w(?:[\w./:@~+-]*[\w/])?))?"
)
# Words that follow an option in library prose (`--reason is too long`, `--auth needs ...`): never its value.
PROSE = frozenset((
    "a", "an", "and", "are", "as", "by", "for", "if", "in", "is", "must", "needs", "of", "on", "or", "the", "to",
    "was", "with", "would",
))
# A `sentiment-flow COMMAND ...` line: in backticks up to the closing one, else up to the end of the sentence.
COMMAND_LINE = (
    r"(?P<tick>`)?sentiment-flow (?P<command>[a-z]+)(?P<args>(?(tick)[^`]*|(?: [^\s`]*[^\s`.;,:])*))"
    r"(?(tick)(?=`)|(?=[.;,:]?(?:\s|$)))"
)
USER_TEXT = re.compile(f"{COMMAND_LINE}|{CLI_OPTION}")


def _as_parameter(match: re.Match, declared: dict[str, str]) -> str:
    """`-P name=VALUE` for one `--name VALUE` of this CLI; options it does not have are left as they are."""
    option, value = match["name"], match["value"]
    takes_value = _options().get(option)
    if takes_value is None:
        return match[0]
    after = ""
    if value is not None and (value in PROSE or (not takes_value and value not in ("true", "false"))):
        value, after = None, match[0][len(option) + 2:]  # " needs ..." goes back into the sentence
    # Extra parameters reach the command as `--KEY VALUE`: only declared ones may be spelt with underscores.
    param = declared.get(option, option)
    if value is None and takes_value:
        return f"-P {param}{after}"  # named, as in "raise -P max_train_samples"
    return f"-P {param}={value or 'true'}{after}"


def _as_mlflow_run(match: re.Match, entry_points: dict[str, tuple[str, list[str], dict[str, str]]]) -> str:
    """The `mlflow run` form of a `sentiment-flow` command line; as it was if no entry point runs that command."""
    if match["command"] not in entry_points:
        return match[0]
    entry_point, positional, options = entry_points[match["command"]]
    positional = list(positional)
    words = iter(match["args"].split())
    params = []
    for word in words:
        if not word.startswith("--"):
            params.append((positional.pop(0) if positional else word, word))
            continue
        option = word[2:]
        takes_value = _options().get(option, True)
        value = next(words, "...") if takes_value else "true"
        params.append((options.get(option, option), value))
    run = "mlflow run ." + ("" if entry_point == "main" else f" -e {entry_point}")
    return (match["tick"] or "") + run + "".join(f" -P {param}={value}" for param, value in params)


@functools.cache
def _options() -> dict[str, bool]:
    """Every option of every command, by name without its dashes: True if it takes a value, False for a flag."""
    return {
        name[2:]: not isinstance(param.type, click.types.BoolParamType)
        for command in cli.commands.values() for param in command.params if isinstance(param, click.Option)
        for name in param.opts if name.startswith("--")
    }


@functools.cache
def _entry_points() -> dict[str, tuple[str, list[str], dict[str, str]]]:
    """CLI command -> (MLproject entry point, its positional parameters in order, option -> parameter), read
    from the commands in the project's MLproject (empty where the package is installed without it)."""
    import yaml

    path = Path(__file__).resolve().parent.parent / "MLproject"
    if not path.is_file():
        return {}
    found = {}
    for entry_point, spec in yaml.safe_load(path.read_text())["entry_points"].items():
        command = re.search(r"-m sentiment_flow (?P<command>[a-z]+)(?P<args>.*)", spec["command"])
        if command is None:
            continue
        words = command["args"].split()
        options = {word[2:]: words[i + 1].strip("{}") for i, word in enumerate(words) if word.startswith("--")}
        positional = [word.strip("{}") for i, word in enumerate(words)
                      if word.startswith("{") and (i == 0 or not words[i - 1].startswith("--"))]
        found[command["command"]] = (entry_point, positional, options)
    return found


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
                # A flag that also takes true/false, as MLproject passes every parameter with a value.
                **({"is_flag": False, "flag_value": True, "metavar": "[true|false]"} if field.type == "bool" else {}),  # type: ignore[arg-type]  # mypy: dict[str, object]
            )(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-v", "--verbose", is_flag=True,
    help="Debug logging, and every library message; without it those go to ~/.local/state/sentiment-flow/COMMAND.log.",
)
@click.version_option(package_name="sentiment-flow")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Fine-tune transformer sentiment classifiers and run them through MLflow."""
    from sentiment_flow import logs, tracking

    logs.setup(ctx.invoked_subcommand, verbose)
    tracking.configure_store()
    signal.signal(signal.SIGTERM, _terminate)
    _die_with_parent()


# MLflow's basic-auth variables: it sends them with every request to an http(s) store.
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _credentials_out_of_uris() -> None:
    """Move user:password@ of MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into MLFLOW_TRACKING_USERNAME/PASSWORD.

    A URI is printed and passed on by libraries (MLflow's "View run ... at:" link, W&B, child processes, Spark
    workers, `mlflow run`): without the password in it, none of them can show it.
    """
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        uri = os.environ.get(variable, "")
        bare, *credentials = split_credentials(uri)
        if credentials == [None, None]:
            continue
        given = dict(zip(CREDENTIAL_VARIABLES, credentials))
        if any(os.environ.get(key, value) != value for key, value in given.items()):
            raise UserError(
                f"{variable} ({redact_uri(uri)}) carries a user and password other than MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD: remove user:password@ from the URI, or unset those two variables."
            )
        os.environ.update(given)  # type: ignore[arg-type]  # both set: a password comes with a user
        os.environ[variable] = bare


@cli.command("train")
@config_options(TrainConfig)
@user_errors
def train_command(**options) -> None:
    """Fine-tune, evaluate, track to MLflow + W&B, and register the model."""
    from sentiment_flow.train import train

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
# Flags that also take a value (`--overwrite`, `--overwrite true`, `--overwrite=no`): MLproject passes every
# parameter as `--name {value}`, and a plain click flag cannot take one.
@click.option(
    "--probabilities", type=click.BOOL, is_flag=False, flag_value=True, default=False, metavar="[true|false]",
    help="Also write prob_positive, prob_neutral, prob_negative.",
)
@click.option(
    "--overwrite", type=click.BOOL, is_flag=False, flag_value=True, default=False, metavar="[true|false]",
    help="Replace OUTPUT if it exists.",
)
@click.option(
    "--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
    help="local: stream the file in this process. spark: score on a Spark cluster (--spark-master); INPUT may be "
    "a folder of part files on any path Spark reads, OUTPUT is a folder (Parquet, or CSV if named *.csv).",
)
@click.option("--spark-master", default=SPARK_MASTER, show_default=True,
              help="Spark master URL for --engine spark (ignored under spark-submit, whose --master decides).")
@click.option("--experiment-name", default="",
              help=f"MLflow experiment of the scoring run [default: {SCORING_EXPERIMENT}]. Under `mlflow run`, the "
              "run is the one it created, in the experiment it chose (mlflow run --experiment-name): empty means that "
              "one, another name is refused.")
@config_options(ScoreConfig)
@user_errors
def score(
    model_uri: str, input_path: str, output_path: str, probabilities: bool, overwrite: bool, engine: str,
    spark_master: str, experiment_name: str, **options,
) -> None:
    """Score INPUT (CSV or Parquet, by its name) with MODEL_URI into OUTPUT: every input column and row, plus
    label, score and the model version. The job is recorded as one MLflow run, with drift against training.

    MODEL_URI is models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a local model directory.
    OUTPUT appears only once every row is written.
    """
    from sentiment_flow import scoring_runs

    config = ScoreConfig(**options)
    with scoring_runs.scoring_run(experiment_name, f"score-{os.path.basename(input_path.rstrip('/'))}") as run_id:
        if engine == "spark":
            from sentiment_flow.spark_scoring import score_spark

            summary = score_spark(
                model_uri, input_path, output_path, config, probabilities=probabilities, overwrite=overwrite,
                master=spark_master,
            )
        else:
            from sentiment_flow.scoring import score_csv

            summary = score_csv(
                model_uri, input_path, output_path, config, probabilities=probabilities, overwrite=overwrite
            )
        local = "://" not in input_path
        params = {"engine": engine, "output_path": output_path, **({"spark_master": spark_master} if engine == "spark" else {})}
        drift = scoring_runs.record(summary, model_uri, os.path.abspath(input_path) if local else input_path, params)
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
        table.add_row(name.replace("_", " "), escape(value) if isinstance(value, str) else f"{value:.4f} (PSI vs training)")
    table.add_row("MLflow run", run_id)
    Console().print(table)


@cli.command()
@click.argument("model_uri")
@click.option("--data", default=None, help="Data folder (or Hub id) holding the source's test split; default: "
              "where its training read it (the version's data_source tag). Its sha256 must match data_hash.")
@click.option("--max-f1-drop", default=INT8_MAX_F1_DROP, show_default=True, type=click.FloatRange(min=0),
              help="Largest test macro-F1 drop from the fp32 model that still registers the variant.")
@click.option("--min-agreement", default=INT8_MIN_AGREEMENT, show_default=True, type=click.FloatRange(0, 1),
              help="Smallest share of test rows on which the variant's label must equal the fp32 model's.")
@click.option("--fallback-margin", default=INT8_FALLBACK_MARGIN, show_default=True, type=click.FloatRange(0, 1),
              help="Rows whose two best int8 probabilities are closer than this are scored again in fp32 (the "
              "variant carries the fp32 graph for them); 0: int8 alone, a smaller model.")
@click.option("--smooth-alpha", default=INT8_SMOOTH_ALPHA, show_default=True, type=click.FloatRange(0, 1),
              help="SmoothQuant's alpha: how much of each Linear's input range moves into its weights before "
              "quantizing, measured on validation rows; 0: no smoothing.")
@optional_flag("--again", help="Build and register another variant even if this version already has one.")
@user_errors
def optimize(
    model_uri: str, data: str | None, max_f1_drop: float, min_agreement: float, fallback_margin: float,
    smooth_alpha: float, again: bool,
) -> None:
    """Build the int8 (ONNX Runtime) variant of MODEL_URI and register it as NAME-int8 if it passes the gate.

    MODEL_URI is models:/NAME/VERSION or models:/NAME@ALIAS. The gate: on the source's test split, macro-F1
    within --max-f1-drop of the fp32 model's and labels equal to its on at least --min-agreement of rows;
    otherwise nothing is registered and the command exits 1.
    """
    from sentiment_flow.optimize import optimize as build_int8

    result = build_int8(model_uri, data, max_f1_drop, min_agreement, fallback_margin, smooth_alpha, again)
    table = Table(title=f"Registered {result.model_uri}", show_header=False)
    table.add_row("source", result.source_uri)
    table.add_row("test macro-F1", f"{result.metrics['test_f1_macro']:.4f} (fp32 {result.fp32_f1_macro:.4f})")
    table.add_row("labels equal to fp32", f"{result.agreement:.2%} of {result.rows:,} test rows")
    table.add_row("scored again in fp32", f"{result.fallback_share:.1%} of test rows (margin under {fallback_margin:g})")
    table.add_row("MLflow run", result.run_id)
    Console().print(table)


# Registry commands: the logic, and every message, live in sentiment_flow.registry.
OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "forced": "yellow", "skipped": "dim"}
AUDIT_SHOWN = 20  # audit records `status` prints; the rest stay in the registered model's tags
FOLD_WIDTH = 50  # characters per line of a table's prose column (a gate's note, a base model's path)


@cli.command("status")
@click.argument("name")
@user_errors
def status_command(name: str) -> None:
    """Versions of registered model NAME: aliases, test metrics, lineage, created and promoted times."""
    from sentiment_flow import registry

    report = registry.status(name)
    out = Console()
    out.print(_status_table(out, report))
    for alias, entries in report.histories.items():
        out.print(f"{alias}: {_history_text(entries)}", highlight=False, markup=False)
    if report.audit:
        shown = report.audit[:AUDIT_SHOWN]
        older = f", {len(report.audit) - len(shown)} older in its audit.* tags" if len(report.audit) > len(shown) else ""
        out.print(f"Audit trail (newest first{older}):", highlight=False, markup=False)
        for record in shown:
            out.print(f"  {record.at[:19].replace('T', ' ')}  {record.by}  {record.summary}",
                      highlight=False, markup=False, soft_wrap=True)


@cli.command("promote")
@click.argument("name")
@click.option("--version", "version", required=True, help="The model version to promote, e.g. 3.")
@click.option("--alias", required=True, help=f"The alias to point at it: {', '.join(ALIASES)}.")
@optional_flag("--dry-run", help="Run the gates and report; change nothing.")
@click.option("--reason", default="", help="Why; recorded on the version and in the audit trail. Required with --force.")
@optional_flag(
    "--force", help="Promote even if gates 2-3 (min_f1_macro, no_regression, per_class_f1, significance) fail."
)
@optional_flag(
    "--despite-rollback", help="Promote a version that was rolled back from ALIAS before; recorded in the audit trail."
)
@config_options(PromotionConfig)
@user_errors
def promote_command(
    name: str, version: str, alias: str, dry_run: bool, reason: str, force: bool, despite_rollback: bool, **thresholds
) -> None:
    """Run the gates on version VERSION of NAME, then point ALIAS at it. Exit 0 promoted, 1 refused, 2 bad input."""
    from sentiment_flow import registry

    report = registry.promote(
        name, version, alias, config=PromotionConfig(**thresholds), dry_run=dry_run, force=force, reason=reason,
        despite_rollback=despite_rollback,
    )
    out = Console()
    if report.gates:
        out.print(_gate_table(out, report))
    out.print(in_user_syntax(report.summary), highlight=False, markup=False, soft_wrap=True)
    sys.exit(report.exit_code)


@cli.command("rollback")
@click.argument("name")
@click.option("--alias", default=CHAMPION, show_default=True, help=f"The alias to move back: {', '.join(ALIASES)}.")
@click.option("--reason", default="", help="Why; recorded in the audit trail.")
@user_errors
def rollback_command(name: str, alias: str, reason: str) -> None:
    """Point ALIAS of NAME back at its previous holder. Exit 0 done, 1 nothing to go back to or superseded,
    2 bad input."""
    from sentiment_flow import registry

    result = registry.rollback(name, alias, reason)
    Console().print(
        in_user_syntax(f"{result.summary}; now {_history_text(result.history)}"), highlight=False, markup=False,
        soft_wrap=True,
    )
    if result.exit_code:
        sys.exit(result.exit_code)


@cli.command("copy")
@click.argument("src_uri")
@click.argument("dst_name")
@user_errors
def copy_command(src_uri: str, dst_name: str) -> None:
    """Copy SRC_URI (models:/NAME/VERSION or models:/NAME@ALIAS) to a new version of DST_NAME, with lineage tags."""
    from sentiment_flow import registry

    result = registry.copy(src_uri, dst_name)
    Console().print(
        in_user_syntax(
            f"Copied {src_uri} (version {result.source_version}) to {result.model_uri}; promote it there with "
            f"`sentiment-flow promote {dst_name} --version {result.version} --alias ...`."
        ),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@cli.command("server")
@click.option("--data-dir", default=DEFAULT_DATA_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Where the embedded PostgreSQL, the artifacts, the server log and the auth config live.")
@click.option("--backend-store-uri", default=None, metavar="postgresql://USER@HOST:PORT/DB",
              help="An existing PostgreSQL database: no PostgreSQL is started. Give its password in PGPASSWORD, "
                   "not in the URI.")
@click.option("--artifacts-destination", default=None, metavar="URI",
              help="Where the server stores artifacts it proxies (a folder, s3://...). [default: DATA_DIR/artifacts]")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on; 0.0.0.0 for the team.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--workers", default=DEFAULT_WORKERS, show_default=True, type=click.IntRange(min=1), help="Server worker processes.")
@click.option("--auth", is_flag=True,
              help="MLflow's basic-auth app; the admin password is read from MLFLOW_AUTH_ADMIN_PASSWORD.")
@user_errors
def server_command(data_dir: str, backend_store_uri: str | None, artifacts_destination: str | None, host: str, port: int,
           workers: int, auth: bool) -> None:
    """Run a team tracking server: `mlflow server` on PostgreSQL with proxied artifacts, until Ctrl-C or SIGTERM."""
    from sentiment_flow import server

    out = Console()
    with server.start(
        data_dir, backend_store_uri=backend_store_uri, artifacts_destination=artifacts_destination,
        host=host, port=port, workers=workers, auth=auth,
        announce=lambda text: out.print(text, highlight=False, markup=False, soft_wrap=True),
    ) as running:
        out.print(f"Team server on {running.url}: store {running.backend}, artifacts {running.artifacts}, "
                  f"log {running.log_path}", highlight=False, markup=False, soft_wrap=True)
        if auth:
            out.print("Clients log in with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.",
                      highlight=False, markup=False)
        out.print(f"export MLFLOW_TRACKING_URI={running.url}", highlight=False, markup=False, soft_wrap=True)
        out.print("Ctrl-C stops the server and its PostgreSQL.", highlight=False, markup=False)
        try:
            code = running.wait()
        except KeyboardInterrupt:
            return
    raise UserError(f"mlflow server exited on its own with code {code}; see {running.log_path}.")


@cli.command("add-user")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(list(ROLES)),
              help="; ".join(f"{name}: {role.description}" for name, role in ROLES.items()))
@click.option("--experiment", "experiments", multiple=True, metavar="NAME",
              help="Another experiment the role covers, created if missing (repeatable); Default, "
                   "sentiment-flow-scoring and sentiment-flow-evaluations always are.")
@user_errors
def add_user_command(username: str, role: str, experiments: tuple[str, ...]) -> None:
    """Add USERNAME to the team server with a role, as its admin: MLFLOW_TRACKING_URI is the server,
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD the admin's login.

    A new user's password is read from the environment variable SENTIMENT_FLOW_NEW_USER_PASSWORD, else
    asked for (never an argument). An existing user keeps its password and gets the role too. Roles are
    team-wide MLflow roles (sentiment-flow-ROLE): an --experiment is added for everyone with the role.
    """
    from sentiment_flow import server_users

    def password() -> str:
        if os.environ.get(NEW_PASSWORD_VAR):
            return os.environ[NEW_PASSWORD_VAR]
        if not sys.stdin.isatty():
            raise UserError(f"No password for the new user {username!r}: set {NEW_PASSWORD_VAR} "
                            f"(read -s {NEW_PASSWORD_VAR} && export {NEW_PASSWORD_VAR}) or run this in a terminal.")
        return click.prompt(f"Password for {username}", hide_input=True, confirmation_prompt=True)

    added = server_users.add_user(username, role, password, experiments)
    experiments_text = ", ".join(f"{name} (id {id_})" for name, id_ in added.experiments.items())
    out = Console()
    out.print(f"{'Created user' if added.created else 'User'} {added.username}"
              f"{'' if added.created else ' exists (password unchanged)'}; role {role} (MLflow role {added.role}): "
              f"{added.permissions[server_users.EXPERIMENT]} on experiments {experiments_text}; "
              f"{added.permissions[server_users.REGISTERED_MODEL]} on every registered model.",
              highlight=False, markup=False, soft_wrap=True)
    out.print(f"They log in with MLFLOW_TRACKING_USERNAME={added.username} and MLFLOW_TRACKING_PASSWORD.",
              highlight=False, markup=False, soft_wrap=True)


def _minute(timestamp: str) -> str:
    """`2026-11-25 10:56` from `2026-11-25T10:56:10Z`: short enough for a table column."""
    return timestamp[:16].replace("T", " ")


def _fitted(out: Console, title: str, columns: tuple[str, ...], rows: list[dict[str, str]], folds: str):
    """`rows` (column -> cell, rich markup) as one table where it fits `out` whole, else one block per row, its
    cells under one another: a value is never cut. Only the cells of column `folds` (prose, paths) may break."""
    table = Table(title=title)
    for column in columns:
        wide = column == folds
        table.add_column(column, no_wrap=not wide, overflow="fold", max_width=FOLD_WIDTH if wide else None)
    for row in rows:
        table.add_row(*row.values())
    # Measured unbounded: a measurement within the console's width would be clamped to it.
    if Measurement.get(out, out.options.update_width(sys.maxsize), table).maximum <= out.width:
        return table
    # Narrower (CI logs and pipes get 80 columns): the first cell heads its block.
    parts: list[str | Table] = [title]
    for row in rows:
        (heading, first), *rest = row.items()
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        for column, cell in rest:
            block.add_row(f"  {column}", cell or "-")
        parts += [f"[bold]{heading}[/] {first}", block]
    return Group(*parts)


def _status_table(out: Console, report):
    """The versions of `report`, newest first, fitted to `out`."""
    rows = [
        {
            "version": row.version if row.status == "READY" else f"{row.version} ({row.status})",
            "aliases": ", ".join(row.aliases),
            **{_metric_column(key): f"{row.metrics[key]:.4f}" if key in row.metrics else "-" for key in KEY_METRICS},
            "lang": escape(row.lang),
            "base model": escape(row.base_model),  # a local path may hold [brackets], which rich would read as markup
            "created (UTC)": _minute(row.created_at),
            "promoted (UTC)": "\n".join(f"{alias} {_minute(when)}" for alias, when in row.promoted_at.items()),
        }
        for row in report.versions
    ]
    columns = ("version", "aliases", *map(_metric_column, KEY_METRICS), "lang", "base model", "created (UTC)",
               "promoted (UTC)")
    return _fitted(out, f"{escape(report.name)} (newest first)", columns, rows, folds="base model")


def _gate_table(out: Console, report):
    """The gate rows of `report`, fitted to `out`."""
    rows = [
        {
            **{column: escape(getattr(gate, column)) for column in ("gate", "candidate", "champion", "threshold")},
            "result": f"[{OUTCOME_STYLE[gate.outcome]}]{gate.outcome}[/]",
            "note": escape(in_user_syntax(gate.note)),
        }
        for gate in report.gates
    ]
    title = f"Gates: {escape(report.name)} version {report.version} -> @{escape(report.alias)}"
    return _fitted(out, title, ("gate", "candidate", "champion", "threshold", "result", "note"), rows, folds="note")


def _metric_column(key: str) -> str:
    """`f1_macro` for `test_f1_macro`: every metric in the table is a test metric."""
    return key.removeprefix("test_")


def _history_text(entries) -> str:
    """`v3 <- v2 <- v1 (rollback goes to v2)`: an alias's holders, newest first."""
    chain = " <- ".join(f"v{entry.version}" for entry in entries)
    target = f"v{entries[1].version}" if len(entries) > 1 else "nowhere"
    return f"{chain} (rollback goes to {target})"


def main() -> None:
    cli(prog_name="sentiment-flow")


if __name__ == "__main__":
    main()
