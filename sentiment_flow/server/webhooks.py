"""MLflow's registry webhooks on the team server: the key that encrypts their secrets, what receivers the server may
call, and adding, listing, testing and removing them (MlflowClient's webhook API; only an admin may).

MLflow encrypts each webhook's secret in the database with MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY; without it every
worker process invents a key of its own, so a secret one worker wrote is unreadable to the others (and to the next
start). MLflow sends each delivery from a thread pool after the request that caused it has been answered: a
receiver that is down or slow never fails or delays a promotion.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

from sentiment_flow.errors import UserError, one_line, redact_uri

log = logging.getLogger(__name__)

KEY_VAR = "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"  # MLflow's: the Fernet key of the webhook secrets
KEY_FILE = "webhook-secret.key"  # in the data dir, mode 0600: the key above, made on first start
SCHEMES_VAR = "MLFLOW_WEBHOOK_ALLOWED_SCHEMES"  # MLflow's: receiver URL schemes it accepts (default https)
PRIVATE_VAR = "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"  # MLflow's: receivers on loopback/private addresses (default no)
SECRET_VAR = "SENTIMENT_FLOW_WEBHOOK_SECRET"  # noqa: S105 - a variable's name, not a secret; where `webhook add` reads the signing secret (never argv)
MIN_SECRET_LENGTH = 16  # characters: an HMAC key a receiver can trust
# Model-registry events: the prompt and budget events MLflow also has concern no model of this project.
REGISTRY_ENTITIES = ("registered_model", "model_version", "model_version_tag", "model_version_alias")


def encryption_key(data_dir: Path) -> str:
    """The webhook-secret encryption key: MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY if set (servers sharing one database
    must share it), else DATA_DIR/webhook-secret.key, created (mode 0600) on first use and reused after.

    Raises UserError, naming the fix but never the key, when the key is invalid or its file is open to others.
    """
    from cryptography.fernet import Fernet

    given = os.environ.get(KEY_VAR)
    path = data_dir / KEY_FILE
    if given is None:
        _create_once(path, Fernet.generate_key().decode() + "\n")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 or path.stat().st_uid != os.geteuid():
            raise UserError(
                f"{path} (the key that encrypts the webhook secrets) must belong to this user and be readable by "
                f"it alone (it is mode {mode:o}): chmod 600 {path}"
            )
        given = path.read_text().strip()
    try:
        Fernet(given.encode())
    except (ValueError, TypeError):
        source = KEY_VAR if os.environ.get(KEY_VAR) is not None else str(path)
        raise UserError(
            f"{source} holds no valid webhook-secret encryption key (32 url-safe base64-encoded bytes). Restore the "
            f"one the webhooks were added with; a new one (python -c 'from cryptography.fernet import Fernet; "
            f"print(Fernet.generate_key().decode())') makes the stored webhook secrets unreadable."
        ) from None
    return given


def _create_once(path: Path, text: str) -> None:
    """Write `path` (mode 0600) holding `text`, unless it exists: never a half-written or second key.

    Written to a private temporary file, then linked into place: the link fails if `path` exists, so of two
    servers starting on one data dir at once, one key wins and both read it whole.
    """
    if path.exists():
        return
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, path)
        log.debug("Created the webhook-secret encryption key %s", path)  # the first line stays the useradd notice
    except FileExistsError:
        pass  # another start made it first: use that one
    finally:
        temporary.unlink()


def server_env(data_dir: Path, allow_http: bool = False, allow_private: bool = False) -> dict[str, str]:
    """The variables `mlflow server` needs for webhooks: the encryption key, and which receivers it may call.

    Plain http and loopback/private receivers stay refused unless the admin allows them: a webhook URL is
    otherwise a way to make the server send requests into its own network.
    """
    return {
        KEY_VAR: encryption_key(data_dir),
        SCHEMES_VAR: "http,https" if allow_http else "https",
        PRIVATE_VAR: "true" if allow_private else "false",
    }


def registry_events() -> list[str]:
    """Every model-registry event MLflow's webhooks deliver, as `entity.action`, sorted."""
    from mlflow.entities.webhook import VALID_ENTITY_ACTIONS

    return sorted(
        f"{entity.value}.{action.value}"
        for entity, actions in VALID_ENTITY_ACTIONS.items()
        for action in actions
        if entity.value in REGISTRY_ENTITIES
    )


def check_events(events: tuple[str, ...] | list[str]) -> list[str]:
    """`events` without repeats, in order; raises UserError listing the valid ones for an unknown one (or none)."""
    valid = registry_events()
    unknown = [event for event in events if event not in valid]
    if unknown or not events:
        found = f"Unknown webhook event {', '.join(map(repr, unknown))}" if unknown else "No webhook event given"
        raise UserError(f"{found}: use --event with one of {', '.join(valid)}.")
    return list(dict.fromkeys(events))


def check_secret(secret: str) -> str:
    """`secret`, refused (without echoing it) when too short to sign with."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise UserError(
            f"The webhook secret must have at least {MIN_SECRET_LENGTH} characters (it has {len(secret)}): "
            f'python -c "import secrets; print(secrets.token_urlsafe(32))" makes one.'
        )
    return secret


def default_name(url: str) -> str:
    """A webhook name from the receiver's host (MLflow's rule: letters, digits, . _ -), unique by a random suffix."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", urlsplit(url).hostname or "receiver").strip("._-") or "receiver"
    return f"{host[:48]}-{secrets.token_hex(3)}"


def team_client():
    """An MlflowClient of the team server; raises UserError when the tracking store is not an http(s) server."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        raise UserError(
            f"Webhooks need the team server, which sends them (sentiment-flow server): set MLFLOW_TRACKING_URI to "
            f"its URL (http://...) and log in as its admin; the store is {redact_uri(uri)!r}."
        )
    return mlflow.MlflowClient()


def _call(action: str, call):
    """`call()`'s result, with a refusal or a rejected request from the server turned into a one-line UserError."""
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except MlflowException as exc:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
        if exc.error_code == "PERMISSION_DENIED":
            raise UserError(
                f"The tracking server refused to {action} (HTTP 403): user {user!r} is not an admin of the server, "
                f"and only an admin manages webhooks; log in as one (MLFLOW_TRACKING_USERNAME)."
            ) from None
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            raise UserError(f"Cannot {action}: {one_line(exc)}.") from None
        raise


def add(url: str, events: list[str], secret: str, name: str | None = None, description: str = ""):
    """The webhook created on the team server (an mlflow.entities.webhook.Webhook), signing with `secret`."""
    client = team_client()
    return _call(
        "add a webhook",
        lambda: client.create_webhook(
            name=name or default_name(url),
            url=url,
            events=check_events(events),
            description=description or None,
            secret=check_secret(secret),
        ),
    )


def list_all() -> list:
    """Every webhook of the team server (all pages), oldest first."""
    client = team_client()
    found, token = [], None
    while True:
        page = _call("list the webhooks", lambda after=token: client.list_webhooks(max_results=100, page_token=after))
        found.extend(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda webhook: webhook.creation_timestamp)


def test(webhook_id: str, event: str | None = None):
    """The result (mlflow.entities.webhook.WebhookTestResult) of the server sending a signed example delivery."""
    client = team_client()
    return _call(
        f"test webhook {webhook_id}",
        lambda: client.test_webhook(webhook_id, check_events([event])[0] if event else None),
    )


def remove(webhook_id: str):
    """The webhook deleted from the team server (as it was)."""
    client = team_client()
    webhook = _call(f"find webhook {webhook_id}", lambda: client.get_webhook(webhook_id))
    _call(f"remove webhook {webhook_id}", lambda: client.delete_webhook(webhook_id))
    return webhook
