"""Concurrent promotions and rollbacks without a lock: each announces itself on the registered model
(`promotion_pending.<alias>.<id>`), and after its own write waits until no other announced one is still
before its write; then the alias's holder is final for the whole overlapping group. All the waiting of one
command shares a single deadline, SETTLE_TIMEOUT after its write."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel

from sentiment_flow.store import alias_version, user

log = logging.getLogger(__name__)

PENDING_PREFIX = "promotion_pending"
CHECKING, WRITTEN, WON = "checking", "written", "won"  # before its write, after it, holding the alias after all
SETTLE_TIMEOUT = 120.0  # seconds, in all, one command waits for overlapping ones (docs/registry.md promises 2 minutes)
STALE_AFTER = 900.0  # seconds after which an announcement from another host is a leftover and ignored
SETTLE_POLL = 0.5  # seconds between reads while waiting: 8 racers polling faster slowed an auth server down


def announce(client: MlflowClient, name: str, alias: str, version: str) -> str:
    """The key of a new `promotion_pending` tag saying this process is promoting `version` to `alias`."""
    key = f"{PENDING_PREFIX}.{alias}.{uuid.uuid4().hex}"
    mark(client, name, key, version, CHECKING)
    return key


def mark(client: MlflowClient, name: str, key: str, version: str, state: str, previous: str | None = None) -> None:
    value = {
        "version": version,
        "state": state,
        "previous": previous,
        "since": time.time(),
        "by": user(),
        # Who announced it, so that a rival on the same host sees at once when this process is gone.
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started(os.getpid()),
    }
    client.set_registered_model_tag(name, key, json.dumps(value))


def started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat), to tell a reused pid; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the command name before ")" may hold spaces
    except (OSError, IndexError):
        return None
    # fields[0] is the state (field 3 of stat(5)); a zombie has exited and only waits for its parent.
    return None if fields[0] == "Z" else fields[19]


def gone(intent: dict) -> bool:
    """Whether the announcing process is known to have ended: same host, and its pid not alive (or reused)."""
    if intent.get("host") != socket.gethostname() or not isinstance(intent.get("pid"), int):
        return False
    pid = intent["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, run by another user
    recorded = intent.get("started")
    if recorded is None:
        return False  # announced where /proc was unreadable: that the pid answers is all there is to know
    return started(pid) != recorded  # a zombie (None), or a later process that was given the same pid


def rivals(model: RegisteredModel, alias: str, own: str | None) -> dict[str, dict]:
    """Other announced promotions of `alias`: version -> {state, previous (the holder it replaces, or None)}."""
    found: dict[str, dict] = {}
    for key, value in model.tags.items():
        if not key.startswith(f"{PENDING_PREFIX}.{alias}.") or key == own:
            continue
        try:
            intent = json.loads(value)
            stale = time.time() - float(intent["since"]) > STALE_AFTER or gone(intent)
        except (ValueError, KeyError, TypeError):
            continue  # not ours to interpret
        if not stale:
            found[str(intent["version"])] = intent
    return found


def deadline() -> float:
    """The monotonic time until which one command may wait for the others, settle and await_losers together."""
    return time.monotonic() + SETTLE_TIMEOUT


def settle(
    client: MlflowClient, name: str, alias: str, own: str | None, until: float
) -> tuple[str | None, dict[str, dict]]:
    """The alias's holder once no overlapping promotion is still before its write (or `until` passed), and
    those promotions."""
    seen: dict[str, dict] = {}
    while True:
        model = client.get_registered_model(name)
        others = rivals(model, alias, own)
        seen.update(others)
        checking = sorted(v for v, intent in others.items() if intent.get("state") == CHECKING)
        if not checking:
            return alias_version(model, alias), seen
        if time.monotonic() > until:
            log.warning(
                "Promotions of %s to %s@%s are still running after %.0f s; reporting the holder as of now",
                ", ".join(checking),
                name,
                alias,
                SETTLE_TIMEOUT,
            )
            return alias_version(model, alias), seen
        time.sleep(SETTLE_POLL)


def await_losers(client: MlflowClient, name: str, alias: str, own: str | None, version: str, until: float) -> None:
    """Wait until the rivals that lost have put their versions' tags back (or `until` passed), so the history
    read next is final."""
    while any(
        v != version and intent.get("state") != WON
        for v, intent in rivals(client.get_registered_model(name), alias, own).items()
    ):
        if time.monotonic() > until:
            log.warning("Overlapping promotions of %s@%s are slow to finish; its history tag may lag", name, alias)
            return
        time.sleep(SETTLE_POLL)


def skip_losers(previous: str, others: dict[str, dict]) -> str:
    """`previous`, or if it is a rival's version (whose promotion lost), the holder that rival replaced."""
    seen: set[str] = set()
    while others.get(previous, {}).get("previous") is not None and previous not in seen:
        seen.add(previous)
        previous = others[previous]["previous"]
    return previous
