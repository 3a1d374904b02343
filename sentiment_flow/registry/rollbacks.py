"""`rollback`: the alias back to its previous holder, inside the promotions' concurrency protocol, recorded in
the audit trail whatever the outcome."""

from __future__ import annotations

from dataclasses import replace

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException

from sentiment_flow.config import CHAMPION
from sentiment_flow.errors import Refused, UserError
from sentiment_flow.registry import audit, pending
from sentiment_flow.registry.reports import RollbackResult
from sentiment_flow.store import NOT_FOUND, READY, alias_version, check_alias, registered_model


def rollback(name: str, alias: str = CHAMPION, reason: str = "") -> RollbackResult:
    """The alias moved back to the version that held it before its current holder was promoted.

    Takes part in the promotions' concurrency protocol; its outcome (also a refusal) is appended to the audit trail.
    """
    reason = audit.check_reason(reason)
    check_alias(alias)
    client = MlflowClient()
    _holder_or_usage_error(registered_model(client, name), alias)
    # Announced before the holder is read, so that a promotion overlapping this rollback waits for it, and it
    # for the promotion; the target is filled in once known.
    own = pending.announce(client, name, alias, "")
    try:
        return _roll_back(client, name, alias, reason, own)
    finally:
        client.delete_registered_model_tag(name, own)


def _holder_or_usage_error(model: RegisteredModel, alias: str) -> str:
    current = alias_version(model, alias)
    if current is None:
        raise UserError(
            f"{model.name} has no alias {alias!r} (its aliases: {', '.join(sorted(model.aliases)) or 'none'}); "
            f"nothing to roll back. Promote a version first: "
            f"sentiment-flow promote {model.name} --version V --alias {alias}."
        )
    return current


def _roll_back(client: MlflowClient, name: str, alias: str, reason: str, own: str) -> RollbackResult:
    current = _holder_or_usage_error(client.get_registered_model(name), alias)
    try:
        target = _rollback_target(client, name, alias, current)
    except Refused as refusal:
        record = audit.new_record(audit.ROLLBACK, audit.REFUSED, alias, current, "", reason=reason, note=str(refusal))
        audit.append(client, name, record)
        raise
    pending.mark(client, name, own, target, pending.CHECKING, current)
    client.set_registered_model_alias(name, alias, target)
    pending.mark(client, name, own, target, pending.WRITTEN, current)
    until = pending.deadline()
    holder, _ = pending.settle(client, name, alias, own, until)
    result = RollbackResult(name=name, alias=alias, from_version=current, to_version=target, history=())
    if holder != target:
        note = f"v{holder or '-'} holds the alias"
        record = audit.new_record(audit.ROLLBACK, audit.SUPERSEDED, alias, current, target, reason=reason, note=note)
        audit.append(client, name, record)
        return replace(result, history=audit.chain(client, name, alias), superseded_by=holder or "")
    pending.mark(client, name, own, target, pending.WON, current)
    pending.await_losers(client, name, alias, own, target, until)
    audit.append(client, name, audit.new_record(audit.ROLLBACK, audit.DONE, alias, current, target, reason=reason))
    return replace(result, history=audit.sync_history(client, name, alias))


def _rollback_target(client: MlflowClient, name: str, alias: str, current: str) -> str:
    """The version `alias` goes back to from `current`: its recorded previous holder, if it exists and is READY."""
    holder = client.get_model_version(name, current)
    target = holder.tags.get(audit.key(alias, "previous_version"), "")
    if not target:
        raise Refused(
            f"Cannot roll back {name}@{alias}: version {current} has no previous holder recorded (it was the first "
            f"{alias}, or the alias was set outside `promote`). Point it explicitly with "
            f"`sentiment-flow promote {name} --version V --alias {alias}`."
        )
    try:
        target_version = client.get_model_version(name, target)
    except MlflowException as exc:
        if exc.error_code != NOT_FOUND:
            raise
        raise Refused(
            f"Cannot roll back {name}@{alias} from version {current}: its previous holder, version {target}, "
            f"no longer exists. Promote another version explicitly with --version."
        ) from exc
    if target_version.status != READY:
        raise Refused(f"Cannot roll back {name}@{alias} to version {target}: it is {target_version.status}, not READY.")
    return target
