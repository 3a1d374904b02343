"""The audit trail: one append-only `audit.<alias>.<time>.<id>` tag on the registered model per promotion,
refusal, forced promotion and rollback (never rewritten, never deleted); the promotion tags on each version
(the chain rollback follows) and the registered model's `alias_history.<alias>` tag derived from them;
writes that leave nothing half-done."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException

from sentiment_flow.errors import UserError, one_line
from sentiment_flow.store import NOT_FOUND, alias_version, user

log = logging.getLogger(__name__)

HISTORY_LIMIT = 20  # entries kept in the alias_history tag; rollback itself follows version tags without limit
SYNC_ATTEMPTS = 5  # rebuilds of the history tag while concurrent promotions keep moving the alias
HISTORY_FIELDS = ("previous_version", "promoted_at", "promoted_by", "reason")  # HistoryEntry's, read from tags
AUDIT_PREFIX = "audit"
# A registered-model tag value is a VARCHAR(5000) in MLflow's SQL stores (PostgreSQL enforces it; sqlite does
# not): a record must fit, so --reason is capped and the gate table is summarised (the full table is on the
# version, in `promotion.<alias>.gates`).
AUDIT_VALUE_LIMIT = 5000
REASON_LIMIT = 1000  # characters of --reason; 1000 is a paragraph, and leaves the record room for the rest
NOTE_LIMIT = 300  # characters of a refusal's message kept in its record
PROMOTE, ROLLBACK = "promote", "rollback"  # AuditRecord.event
DONE, REFUSED, SUPERSEDED = "done", "refused", "superseded"  # AuditRecord.outcome
REQUESTED = "approval requested"  # AuditRecord.outcome: the gates passed, a protected alias waits for an approval


@dataclass(frozen=True)
class AuditRecord:
    """One promotion or rollback of an alias, whatever its outcome, as written when it ended."""

    at: str  # UTC, to the microsecond: records sort by it
    event: str  # promote | rollback
    outcome: str  # done | refused (by a gate, or nothing to roll back to) | superseded (a concurrent one won) |
    # approval requested (the gates passed, but the alias is protected: registry.approvals)
    alias: str
    from_version: str  # the holder before ("" if none)
    to_version: str  # the version the alias was (to be) pointed at ("" if a rollback found none)
    by: str
    reason: str = ""
    forced: bool = False
    despite_rollback: str = ""  # the rollback this promotion acknowledged, as "at by reason"
    gates: str = ""  # "gate=outcome ..." for a promotion's gate table
    note: str = ""  # why refused, or which version superseded it
    requested_by: str = ""  # for a protected alias: who asked for the approval (the server's authenticated user)
    approved_by: str = ""  # who ran `approve` (another user, holding MANAGE), whatever its outcome
    approval_reason: str = ""  # the approver's --reason (`reason` is the request's)

    @property
    def summary(self) -> str:
        """One line for `status`: what happened, by whom, why."""
        what = f"{self.event} {self.alias} v{self.from_version or '-'} -> v{self.to_version or '-'}"
        extra = [
            text
            for text in (
                "forced" if self.forced else "",
                f"despite the rollback of {self.despite_rollback}" if self.despite_rollback else "",
                f"requested by {self.requested_by}" if self.requested_by else "",
                f"approver {self.approved_by}" if self.approved_by else "",
                f"reason: {self.reason}" if self.reason else "",
                f"approval reason: {self.approval_reason}" if self.approval_reason else "",
                self.note,
            )
            if text
        ]
        return f"{what}: {self.outcome}" + "".join(f"; {text}" for text in extra)


def check_reason(reason: str) -> str:
    """The reason, stripped; a UserError if it is longer than an audit record can hold."""
    reason = reason.strip()
    if len(reason) > REASON_LIMIT:
        raise UserError(
            f"--reason is {len(reason)} characters; at most {REASON_LIMIT} fit in the audit record. "
            f"Shorten it, e.g. to a ticket link and a sentence."
        )
    return reason


def new_record(
    event: str, outcome: str, alias: str, from_version: str | None, to_version: str | None, **rest
) -> AuditRecord:
    """A record stamped now, by this user."""
    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return AuditRecord(
        at=at,
        event=event,
        outcome=outcome,
        alias=alias,
        from_version=from_version or "",
        to_version=to_version or "",
        by=user(),
        **rest,
    )


def encode(record: AuditRecord) -> str:
    """The record as the JSON a tag holds, at most AUDIT_VALUE_LIMIT characters (the note is cut to fit)."""
    value = asdict(record)
    value["note"] = value["note"][:NOTE_LIMIT]
    text = json.dumps(value, ensure_ascii=False)  # PostgreSQL counts characters: "\ud83d..." would cost 6
    if len(text) > AUDIT_VALUE_LIMIT:  # only a gate table of hundreds of rows gets here
        value["gates"] = value["gates"][: max(0, len(value["gates"]) - (len(text) - AUDIT_VALUE_LIMIT) - 3)] + "..."
        text = json.dumps(value, ensure_ascii=False)
    return text


def append(client: MlflowClient, name: str, record: AuditRecord) -> bool:
    """Whether `record` was written as a new tag of the registered model (a key no one else writes).

    A failure is logged, not raised: a refusal by a user who may only read stays a refusal, and an alias that
    has moved is not undone because its record could not be written.
    """
    key = f"{AUDIT_PREFIX}.{record.alias}.{record.at.replace(':', '').replace('-', '')}.{uuid.uuid4().hex[:8]}"
    try:
        client.set_registered_model_tag(name, key, encode(record))
    except MlflowException as exc:
        log.warning("Could not write the audit record of %s (%s): %s", name, record.summary, one_line(exc))
        return False
    return True


def trail(model: RegisteredModel) -> tuple[AuditRecord, ...]:
    """Every audit record of the registered model, newest first."""
    known = {field.name for field in fields(AuditRecord)}
    records = []
    for tag, value in model.tags.items():
        if not tag.startswith(f"{AUDIT_PREFIX}."):
            continue
        try:
            records.append(AuditRecord(**{k: v for k, v in json.loads(value).items() if k in known}))
        except (ValueError, TypeError):
            log.warning("Skipping the unreadable audit tag %s of %s", tag, model.name)
    return tuple(sorted(records, key=lambda r: r.at, reverse=True))


def last_rollback(model: RegisteredModel, alias: str, version: str) -> AuditRecord | None:
    """The latest rollback that took `alias` away from `version`, if any."""
    return next(
        (r for r in trail(model) if (r.event, r.outcome, r.alias, r.from_version) == (ROLLBACK, DONE, alias, version)),
        None,
    )


@dataclass(frozen=True)
class HistoryEntry:
    """One holder of an alias, as recorded on that version when it was promoted."""

    version: str
    previous_version: str  # "" for the first holder, or when the alias was set outside `promote`
    promoted_at: str
    promoted_by: str
    reason: str


def key(alias: str, field: str) -> str:
    return f"promotion.{alias}.{field}"


def keys(alias: str, fields: dict[str, str]) -> dict[str, str]:
    return {key(alias, field): value for field, value in fields.items()}


def tag_then_point(
    client: MlflowClient, name: str, alias: str, tagged: str, tags: dict[str, str], drop: list[str], target: str
) -> dict[str, str]:
    """Write `tags` on version `tagged` (deleting `drop`), then point `alias` at `target`; returns the tags before.

    If anything raises before the alias has moved, the tags of `tagged` are put back as they were.
    """
    before = client.get_model_version(name, tagged).tags
    try:
        for tag, value in tags.items():
            client.set_model_version_tag(name, tagged, tag, value)
        for tag in drop:
            if tag in before:
                client.delete_model_version_tag(name, tagged, tag)
        client.set_registered_model_alias(name, alias, target)
    except BaseException:
        _restore_unless_moved(client, name, alias, tagged, before, [*tags, *drop], target)
        raise
    return before


def _restore_unless_moved(
    client: MlflowClient, name: str, alias: str, tagged: str, before: dict[str, str], tags: list[str], target: str
) -> None:
    try:
        # The store may have applied the alias before the error (e.g. a timeout on the reply): then the
        # tags describe what happened and stay.
        if alias_version(client.get_registered_model(name), alias) == target:
            return
        put_back(client, name, tagged, before, tags)
    except Exception:  # the original error is the one to raise; this one is only logged
        log.exception("Could not restore the tags of %s version %s; compare them with `status`", name, tagged)


def put_back(client: MlflowClient, name: str, version: str, before: dict[str, str], tags: list[str]) -> None:
    """The tags `tags` of `version` as they were in `before` (deleted where they did not exist)."""
    current = client.get_model_version(name, version).tags
    for tag in tags:
        if tag in before:
            if current.get(tag) != before[tag]:
                client.set_model_version_tag(name, version, tag, before[tag])
        elif tag in current:
            client.delete_model_version_tag(name, version, tag)


def sync_history(client: MlflowClient, name: str, alias: str) -> tuple[HistoryEntry, ...]:
    """The alias's history, written to the registered model's tag once it agrees with the alias's holder."""
    tag = f"alias_history.{alias}"
    history: tuple[HistoryEntry, ...] = ()
    try:
        for _ in range(SYNC_ATTEMPTS):
            history = chain(client, name, alias)
            client.set_registered_model_tag(name, tag, json.dumps([asdict(entry) for entry in history]))
            # A concurrent promotion may have moved the alias since the chain was read; then write again.
            if chain(client, name, alias) == history:
                return history
        log.warning("%s@%s kept moving; its %s tag may lag (the version tags are authoritative)", name, alias, tag)
    except MlflowException as exc:
        # The alias has moved already; the tag is derived and is rebuilt on the next promotion or rollback.
        log.warning("The alias moved but the %s tag of %s was not updated: %s", tag, name, one_line(exc))
    return history


def chain(client: MlflowClient, name: str, alias: str) -> tuple[HistoryEntry, ...]:
    """The alias's holders, newest first, following each one's previous_version tag as rollback does."""
    version = alias_version(client.get_registered_model(name), alias)
    entries: list[HistoryEntry] = []
    seen: set[str] = set()
    # A version promoted twice may point back at a later holder: stop at the first repeat.
    while version and version not in seen and len(entries) < HISTORY_LIMIT:
        seen.add(version)
        try:
            tags = client.get_model_version(name, version).tags
        except MlflowException as exc:
            if exc.error_code != NOT_FOUND:
                raise
            break  # deleted: rollback refuses to go there, so the history ends here too
        recorded = {field: tags.get(key(alias, field), "") for field in HISTORY_FIELDS}
        entries.append(HistoryEntry(version=version, **recorded))
        version = recorded["previous_version"]
    return tuple(entries)
