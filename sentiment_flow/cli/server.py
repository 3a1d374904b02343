"""The team-server commands: `server` runs it, `add-user` gives a user a role on it."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console

from sentiment_flow.cli.group import cli, user_errors
from sentiment_flow.config import DEFAULT_PROTECTED_ALIASES
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.server.app import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS
from sentiment_flow.server.users import NEW_PASSWORD_VAR, ROLES


@cli.command("server")
@click.option(
    "--data-dir",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the embedded PostgreSQL, the artifacts, the server log and the auth config live.",
)
@click.option(
    "--backend-store-uri",
    default=None,
    metavar="postgresql://USER@HOST:PORT/DB",
    help="An existing PostgreSQL database: no PostgreSQL is started. Give its password in PGPASSWORD, not in the URI.",
)
@click.option(
    "--artifacts-destination",
    default=None,
    metavar="URI",
    help="Where the server stores artifacts it proxies (a folder, s3://...). [default: DATA_DIR/artifacts]",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on; 0.0.0.0 for the team.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option(
    "--workers", default=DEFAULT_WORKERS, show_default=True, type=click.IntRange(min=1), help="Server worker processes."
)
@click.option(
    "--auth",
    is_flag=True,
    help="Users and permissions (MLflow's basic-auth app with the governance rules of docs/server.md); the admin "
    "password is read from MLFLOW_AUTH_ADMIN_PASSWORD.",
)
@click.option(
    "--protected-alias",
    "protected_aliases",
    multiple=True,
    metavar="ALIAS",
    help=f"With --auth: an alias only users with MANAGE on the model set or delete (repeatable). "
    f"[default: {', '.join(DEFAULT_PROTECTED_ALIASES)}]",
)
@click.option(
    "--webhook-allow-http",
    is_flag=True,
    help="Let webhooks call plain http:// receivers (default: https only; the payload and signature travel in clear).",
)
@click.option(
    "--webhook-allow-private-ips",
    is_flag=True,
    help="Let webhooks call receivers on loopback or private addresses (default: public ones only, so a webhook "
    "cannot reach into the server's own network).",
)
@user_errors
def server_command(
    data_dir: str,
    backend_store_uri: str | None,
    artifacts_destination: str | None,
    host: str,
    port: int,
    workers: int,
    auth: bool,
    webhook_allow_http: bool,
    webhook_allow_private_ips: bool,
    protected_aliases: tuple[str, ...],
) -> None:
    """Run a team tracking server: `mlflow server` on PostgreSQL with proxied artifacts, until Ctrl-C or SIGTERM."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_alias_name

    from sentiment_flow.server import app

    if protected_aliases and not auth:
        raise UserError("--protected-alias needs --auth: without users, no one is told apart from anyone else.")
    for alias in protected_aliases:
        try:
            _validate_model_alias_name(alias)  # MLflow's own rule: a comma, say, could never be an alias
        except MlflowException as invalid:
            raise UserError(f"--protected-alias {alias!r} is not a valid alias: {one_line(invalid)}.") from None
    out = Console()
    with app.start(
        data_dir,
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        port=port,
        workers=workers,
        auth=auth,
        webhook_http=webhook_allow_http,
        webhook_private=webhook_allow_private_ips,
        protected_aliases=protected_aliases or DEFAULT_PROTECTED_ALIASES,
        announce=lambda text: out.print(text, highlight=False, markup=False, soft_wrap=True),
    ) as running:
        out.print(
            f"Team server on {running.url}: store {running.backend}, artifacts {running.artifacts}, "
            f"log {running.log_path}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        if auth:
            out.print(
                "Clients log in with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.",
                highlight=False,
                markup=False,
            )
        out.print(f"export MLFLOW_TRACKING_URI={running.url}", highlight=False, markup=False, soft_wrap=True)
        out.print("Ctrl-C stops the server and its PostgreSQL.", highlight=False, markup=False)
        try:
            code = running.wait()
        except KeyboardInterrupt:
            return
    raise UserError(f"mlflow server exited on its own with code {code}; see {running.log_path}.")


@cli.command("add-user")
@click.argument("username")
@click.option(
    "--role",
    required=True,
    type=click.Choice(list(ROLES)),
    help="; ".join(f"{name}: {role.description}" for name, role in ROLES.items()),
)
@click.option(
    "--experiment",
    "experiments",
    multiple=True,
    metavar="NAME",
    help="Another experiment the role covers, created if missing (repeatable); Default, "
    "sentiment-flow-scoring and sentiment-flow-evaluations always are.",
)
@user_errors
def add_user_command(username: str, role: str, experiments: tuple[str, ...]) -> None:
    """Add USERNAME to the team server with a role, as its admin: MLFLOW_TRACKING_URI is the server,
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD the admin's login.

    A new user's password is read from the environment variable SENTIMENT_FLOW_NEW_USER_PASSWORD, else
    asked for (never an argument). An existing user keeps its password and gets the role too. Roles are
    team-wide MLflow roles (sentiment-flow-ROLE): an --experiment is added for everyone with the role.
    """
    from sentiment_flow.server import users

    def password() -> str:
        if os.environ.get(NEW_PASSWORD_VAR):
            return os.environ[NEW_PASSWORD_VAR]
        if not sys.stdin.isatty():
            raise UserError(
                f"No password for the new user {username!r}: set {NEW_PASSWORD_VAR} "
                f"(read -s {NEW_PASSWORD_VAR} && export {NEW_PASSWORD_VAR}) or run this in a terminal."
            )
        return click.prompt(f"Password for {username}", hide_input=True, confirmation_prompt=True)

    added = users.add_user(username, role, password, experiments)
    experiments_text = ", ".join(f"{name} (id {id_})" for name, id_ in added.experiments.items())
    out = Console()
    out.print(
        f"{'Created user' if added.created else 'User'} {added.username}"
        f"{'' if added.created else ' exists (password unchanged)'}; role {role} (MLflow role {added.role}): "
        f"{added.permissions[users.EXPERIMENT]} on experiments {experiments_text}; "
        f"{added.permissions[users.REGISTERED_MODEL]} on every registered model.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"They log in with MLFLOW_TRACKING_USERNAME={added.username} and MLFLOW_TRACKING_PASSWORD.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
