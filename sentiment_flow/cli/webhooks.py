"""`sentiment-flow webhook add|list|test|remove`: the team server's registry webhooks, as its admin."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console

from sentiment_flow.cli.group import cli, user_errors
from sentiment_flow.errors import Refused, UserError, one_line, redact_uri
from sentiment_flow.server.webhooks import SECRET_VAR


def _print(text: str) -> None:
    Console().print(text, highlight=False, markup=False, soft_wrap=True)


@cli.group("webhook")
def webhook_group() -> None:
    """The team server's registry webhooks: every alias move (promote, approve, rollback) and new version is
    POSTed, signed with the webhook's secret, to its receivers.

    Run as the server's admin (MLflow lets only an admin manage webhooks): MLFLOW_TRACKING_URI is the team
    server, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD the admin's login.
    """


@webhook_group.command("add")
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    metavar="ENTITY.ACTION",
    help="An event to send (repeatable): model_version_alias.created (promote, approve, rollback), "
    "model_version_alias.deleted, model_version.created, registered_model.created, model_version_tag.set|deleted.",
)
@click.option("--name", default=None, help="A name for it (letters, digits, . _ -). [default: the URL's host + suffix]")
@click.option("--description", default="", help="What the receiver does, shown by `webhook list`.")
@user_errors
def add_command(url: str, events: tuple[str, ...], name: str | None, description: str) -> None:
    """Send the --event(s) to the receiver at URL, signed with a secret read from SENTIMENT_FLOW_WEBHOOK_SECRET,
    else asked for (never an argument)."""
    from sentiment_flow.server import webhooks

    webhooks.check_events(events)  # before asking for a secret
    webhooks.team_client()  # a local store is refused before a secret is asked for
    secret = os.environ.get(SECRET_VAR)
    if not secret:
        if not sys.stdin.isatty():
            raise UserError(
                f"No webhook secret: set {SECRET_VAR} (read -s {SECRET_VAR} && export {SECRET_VAR}) or run this in "
                "a terminal. The receiver verifies each delivery's signature with the same secret."
            )
        secret = click.prompt("Webhook secret", hide_input=True, confirmation_prompt=True)
    hook = webhooks.add(url, list(events), secret, name, description)
    _print(
        f"Added webhook {hook.webhook_id} ({hook.name}): {', '.join(map(str, hook.events))} -> {redact_uri(hook.url)}, "
        f"signed with the secret you gave (header X-MLflow-Signature). Check it: sentiment-flow webhook test "
        f"{hook.webhook_id}"
    )


@webhook_group.command("list")
@user_errors
def list_command() -> None:
    """The team server's webhooks: id, name, status, events and receiver URL (never their secrets)."""
    from sentiment_flow.server import webhooks

    found = webhooks.list_all()
    if not found:
        _print("No webhooks. Add one: sentiment-flow webhook add URL --event model_version_alias.created")
    for hook in found:
        line = (
            f"{hook.webhook_id}  {hook.name}  {hook.status}  {','.join(map(str, hook.events))}  {redact_uri(hook.url)}"
        )
        _print(line + (f"  ({hook.description})" if hook.description else ""))


@webhook_group.command("test")
@click.argument("webhook_id")
@click.option("--event", default=None, metavar="ENTITY.ACTION", help="The example event to send. [default: its first]")
@user_errors
def test_command(webhook_id: str, event: str | None) -> None:
    """Have the server send WEBHOOK_ID an example delivery, signed as a real one, and show the receiver's answer;
    exits 1 when the receiver did not accept it."""
    from sentiment_flow.server import webhooks

    result = webhooks.test(webhook_id, event)
    body = one_line(result.response_body or "")[:200]
    if result.success:
        _print(f"Webhook {webhook_id}: the receiver answered HTTP {result.response_status}. {body}".rstrip())
        return
    answer = (
        f"the receiver answered HTTP {result.response_status}{f': {body}' if body else ''}"
        if result.response_status
        else f"the server could not deliver it: {one_line(result.error_message or 'no error given')}"
    )
    raise Refused(
        f"Webhook {webhook_id} failed its test: {answer}. Check that the receiver runs, is reachable from the "
        "server and uses the same secret."
    )


@webhook_group.command("remove")
@click.argument("webhook_id")
@user_errors
def remove_command(webhook_id: str) -> None:
    """Delete WEBHOOK_ID: its receiver hears nothing more."""
    from sentiment_flow.server import webhooks

    hook = webhooks.remove(webhook_id)
    _print(f"Removed webhook {webhook_id} ({hook.name}, {redact_uri(hook.url)}).")
