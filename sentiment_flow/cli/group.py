"""The `sentiment-flow` group and what every command shares: options generated from the config dataclasses,
flags that also take a value, signals, and errors printed as one line with the exit code they carry."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys

import click
from rich.console import Console
from rich.markup import escape

from sentiment_flow.cli import syntax
from sentiment_flow.cli.syntax import in_user_syntax
from sentiment_flow.errors import UserError, redact_uri, split_credentials
from sentiment_flow.server.refusals import permission_denied

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


# The config modules postpone annotations, so dataclass field types arrive as strings.
OPTION_TYPES = {"str": str, "int": WholeNumber(), "float": float, "bool": click.BOOL}
AUTH_ERRORS = {
    "UNAUTHENTICATED": "The tracking server refused the request (HTTP 401, not logged in): set "
    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server (a wrong password gets "
    "this answer too).",
}


# A flag that also takes a value (`--overwrite`, `--overwrite true`, `--overwrite=no`): MLproject passes every
# parameter as `--name {value}`, and a plain click flag cannot take one.
FLAG_WITH_VALUE = {"type": click.BOOL, "is_flag": False, "flag_value": True, "metavar": "[true|false]"}


def optional_flag(name: str, help: str):
    """A flag, off by default, that also takes true/false (FLAG_WITH_VALUE)."""
    return click.option(name, default=False, help=help, **FLAG_WITH_VALUE)  # type: ignore[arg-type]  # mypy: dict[str, object]


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

        from sentiment_flow import runs, store

        try:  # here, not in the group: the registry_scripts call their command without it
            _credentials_out_of_uris()
        except UserError as exc:  # before anything, ending a run included, talks to the store
            _fail(exc)
        try:
            result = func(*args, **kwargs)
        except (Terminated, KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # after Ctrl-C too: `mlflow run` then sends SIGTERM
            runs.end_project_run("KILLED")
            raise
        except MlflowException as exc:
            # A server with --auth answers 401/403 with these codes. Any other store error's text may hold the
            # tracking URI with its password, and a traceback helps no user here. The store is what failed:
            # the project run is left to `mlflow run`, which marks it FAILED.
            # A 403's message names the permission and the resource, read from the refused request.
            error = (
                UserError(permission_denied(exc))
                if exc.error_code == "PERMISSION_DENIED"
                else UserError(AUTH_ERRORS[exc.error_code])
                if exc.error_code in AUTH_ERRORS
                else store.store_error(exc)
            )
            _fail(error)
        except UserError as exc:
            runs.end_project_run("FAILED")
            _fail(exc)
        # Under `mlflow run`, end its run here too: killed itself, `mlflow run` would leave it RUNNING.
        runs.end_project_run("FINISHED")
        return result

    return wrapper


def _fail(error: UserError) -> None:
    console.print(f"[bold red]Error:[/] {escape(in_user_syntax(str(error)))}", highlight=False, soft_wrap=True)
    sys.exit(error.exit_code)


def config_options(config_cls):
    """One click option per dataclass field, with its default and help: the options cannot drift."""

    def decorate(func):
        for field in reversed(dataclasses.fields(config_cls)):
            func = click.option(
                f"--{field.name.replace('_', '-')}",
                field.name,
                default=field.default,
                show_default=True,
                help=field.metadata["help"],
                **(FLAG_WITH_VALUE if field.type == "bool" else {"type": OPTION_TYPES[field.type]}),  # type: ignore[arg-type]  # mypy: dict[str, object]
            )(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Debug logging, and every library message; without it those go to ~/.local/state/sentiment-flow/COMMAND.log.",
)
@click.version_option(package_name="sentiment-flow")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Fine-tune transformer sentiment classifiers and run them through MLflow."""
    from sentiment_flow import logs, store

    logs.setup(ctx.invoked_subcommand, verbose)
    store.configure_store()
    signal.signal(signal.SIGTERM, _terminate)
    _die_with_parent()


syntax.COMMANDS = cli.commands  # the same dict: commands added later are in it too


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


def main() -> None:
    # The commands register themselves on `cli` when their modules are imported (sentiment_flow.cli does).
    cli(prog_name="sentiment-flow")
