"""The audit trail: promotion tags on each version (the source of truth for rollback) and the registered
model's `alias_history.<alias>` tag derived from them; writes that leave nothing half-done."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from sentiment_flow.errors import one_line
from sentiment_flow.registry.store import NOT_FOUND, alias_version

log = logging.getLogger(__name__)

HISTORY_LIMIT = 20  # entries kept in the alias_history tag; rollback itself follows version tags without limit
SYNC_ATTEMPTS = 5  # rebuilds of the history tag while concurrent promotions keep moving the alias
HISTORY_FIELDS = ("previous_version", "promoted_at", "promoted_by", "reason")  # HistoryEntry's, read from tags
# A version rolled away from earlier and promoted again: its old rollback record no longer applies.
ROLLBACK_FIELDS = ("rolled_back_at", "rolled_back_by", "rolled_back_to", "rolled_back_reason")


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
    except Exception:  # noqa: BLE001 - the original error is the one to raise; this one is only logged
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
