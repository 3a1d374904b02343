"""`serve`'s registry-webhook route: a signed delivery from the team server that moves the followed alias wakes the
alias follower at once, instead of at its next poll.

Verified as examples/webhook_receiver.py does (MLflow's HMAC-SHA256 over `DELIVERY_ID.TIMESTAMP.BODY`, a fresh
timestamp); anything unverified gets 401 and changes nothing. A replayed delivery can only cause one more look-up
of the alias, which the poll makes anyway: no delivery ids are kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping

from mlflow.webhooks.constants import (
    WEBHOOK_DELIVERY_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_SIGNATURE_VERSION,
    WEBHOOK_TIMESTAMP_HEADER,
)

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/registry-webhook"  # beside MLflow's scoring routes, which stay as they are
SECRET_VAR = "SENTIMENT_FLOW_SERVE_WEBHOOK_SECRET"  # noqa: S105 - a variable's name; the webhook's secret, if any
MAX_AGE = 300  # seconds a delivery's timestamp may be off: older ones are refused as possible replays
ALIAS_ENTITY = "model_version_alias"  # MLflow's entity of alias created/deleted events


def refusal(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str | None:
    """None when `body` is a fresh delivery signed with `secret`; else why it is refused."""
    signature = headers.get(WEBHOOK_SIGNATURE_HEADER, "")
    delivery_id = headers.get(WEBHOOK_DELIVERY_ID_HEADER, "")
    timestamp = headers.get(WEBHOOK_TIMESTAMP_HEADER, "")
    if not (signature and delivery_id and timestamp):
        return "unsigned"
    if not timestamp.isdigit() or abs((time.time() if now is None else now) - int(timestamp)) > MAX_AGE:
        return "stale timestamp"
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = f"{WEBHOOK_SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"
    return None if hmac.compare_digest(expected.encode(), signature.encode()) else "bad signature"


def handler(secret: str, name: str, alias: str, wake: Callable[[], None]):
    """A function of (body, headers) -> (HTTP status, text) that calls `wake` for a verified event moving
    `name`@`alias`, answers 200 to other verified events and 401 to anything unverified."""

    def handle(body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        refused = refusal(secret, headers, body)
        if refused is not None:
            logger.warning("Refused a registry webhook delivery: %s", refused)
            return 401, refused
        try:
            event = json.loads(body)
            data = event.get("data") or {}
            moved = event.get("entity") == ALIAS_ENTITY and (data.get("name"), data.get("alias")) == (name, alias)
        except (ValueError, AttributeError):
            return 400, "not a registry event"
        if not moved:
            return 200, "not the followed alias"
        logger.info("Registry webhook: %s@%s moved (%s); checking it now", name, alias, event.get("action"))
        wake()
        return 200, "checking"

    return handle
