"""The registry commands status, promote and copy (rollback has its own module). Each returns a result or
raises; `cli.py` prints."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime, timezone

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from sentiment_flow.config import CHAMPION, PromotionConfig, model_name_problem, shortened
from sentiment_flow.errors import Refused, UserError
from sentiment_flow.registry import approvals, audit, pending
from sentiment_flow.registry.gates import run_gates
from sentiment_flow.registry.reports import Approval, CopyResult, ModelStatus, PromotionReport, VersionStatus
from sentiment_flow.store import (
    DENIED,
    alias_version,
    all_versions,
    check_alias,
    evidence,
    get_version,
    models_uri,
    registered_model,
    resolve_version,
    user,
    utc,
)


def status(name: str) -> ModelStatus:
    """Every version of `name` with aliases, test metrics, lineage and times; each alias's history."""
    client = MlflowClient()
    model = registered_model(client, name)
    held: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        held.setdefault(str(version), []).append(alias)
    rows = []
    for mv in all_versions(client, name):
        aliases = tuple(sorted(held.get(str(mv.version), ())))
        rows.append(
            VersionStatus(
                version=str(mv.version),
                status=mv.status,
                aliases=aliases,
                metrics=evidence(client, mv).metrics,
                lang=mv.tags.get("lang", ""),
                base_model=mv.tags.get("base_model", ""),
                created_at=utc(datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc)),
                promoted_at={alias: mv.tags.get(audit.key(alias, "promoted_at"), "") for alias in aliases},
            )
        )
    rows.sort(key=lambda row: int(row.version), reverse=True)
    histories = {alias: audit.chain(client, name, alias) for alias in sorted(model.aliases)}
    requests = tuple((request, request.stale(model)) for request in approvals.pending(model))
    return ModelStatus(name, tuple(rows), histories, audit.trail(model), requests)


def promote(
    name: str,
    version: str,
    alias: str,
    *,
    config: PromotionConfig = PromotionConfig(),
    dry_run: bool = False,
    force: bool = False,
    reason: str = "",
    despite_rollback: bool = False,
    hold: bool = False,
    approval: Approval | None = None,
) -> PromotionReport:
    """The gate report for `version`; when every gate passes (and not a dry run) `alias` points at it.

    A version once rolled back from `alias` is refused (Refused) unless `despite_rollback` acknowledges it.
    Every outcome but a dry run or a no-op is appended to the audit trail. With `hold` the gates run and a
    refusal is recorded, but the alias stays (`held` says they passed): the caller asks for an approval.
    `approval` names who requested and approved this promotion, for its audit record.
    """
    reason = audit.check_reason(reason)
    if force and not reason:
        raise UserError(
            "--force needs --reason: say why gates 2-3 are overridden, e.g. --reason 'hotfix for ticket 123'; "
            "the reason is recorded on the version."
        )
    check_alias(alias)
    client = MlflowClient()
    model = registered_model(client, name)
    candidate = get_version(client, name, version)
    version = str(candidate.version)  # the store returns an int
    previous = alias_version(model, alias)
    report = PromotionReport(
        name=name,
        version=version,
        alias=alias,
        previous=previous,
        champion=None,
        gates=(),
        dry_run=dry_run,
        forced=force,
        approval=approval,
    )
    if previous == version:
        return replace(report, already_held=True)
    acknowledged = _acknowledged_rollback(client, model, report, despite_rollback, reason)

    # Announced before the gates, so that promotions overlapping this one wait for it, and it for them.
    own = None if dry_run or hold else pending.announce(client, name, alias, version)
    try:
        return _gate_and_point(client, report, candidate, model, config, force, reason, own, acknowledged)
    finally:
        if own:
            client.delete_registered_model_tag(name, own)


def _acknowledged_rollback(
    client: MlflowClient, model: RegisteredModel, report: PromotionReport, despite_rollback: bool, reason: str
) -> str:
    """The rollback of this version that --despite-rollback acknowledges ("" if none); Refused if unacknowledged."""
    rolled_back = audit.last_rollback(model, report.alias, report.version)
    if rolled_back is None:
        return ""
    why = " ".join(rolled_back.reason.split()) or "no reason given"
    acknowledged = f"{rolled_back.at} by {rolled_back.by} ({why})"
    if despite_rollback:
        return acknowledged
    message = (
        f"Version {report.version} was rolled back from {report.name}@{report.alias} at {rolled_back.at} by "
        f"{rolled_back.by} ({why}). To promote it again anyway add --despite-rollback (recorded in the audit trail)."
    )
    if not report.dry_run:
        _record(client, report, audit.REFUSED, reason, note=message)
    raise Refused(message)


def _record(
    client: MlflowClient, report: PromotionReport, outcome: str, reason: str, acknowledged: str = "", note: str = ""
) -> None:
    """Append the promotion's outcome to the audit trail."""
    gates = " ".join(f"{g.gate}={g.outcome}" for g in report.gates)
    record = audit.new_record(
        audit.PROMOTE,
        outcome,
        report.alias,
        report.previous,
        report.version,
        reason=reason,
        forced=report.forced,
        despite_rollback=acknowledged,
        gates=gates,
        note=note,
        **(asdict(report.approval) if report.approval else {}),
    )
    audit.append(client, report.name, record)


def _gate_and_point(
    client: MlflowClient,
    report: PromotionReport,
    candidate: ModelVersion,
    model: RegisteredModel,
    config: PromotionConfig,
    force: bool,
    reason: str,
    own: str | None,
    acknowledged: str,
) -> PromotionReport:
    name, version, alias = report.name, report.version, report.alias
    # 1-4: read only; nothing is written unless every gate passes (but a refusal, which is recorded).
    champion_version = alias_version(model, CHAMPION)
    champion = client.get_model_version(name, champion_version) if champion_version else None
    gates = tuple(run_gates(client, candidate, champion, config, force))
    report = replace(report, champion=champion_version, gates=gates)
    if report.dry_run:
        return report
    if report.failed:
        _record(client, report, audit.REFUSED, reason, acknowledged, note=f"refused by {', '.join(report.failed)}")
        return report
    if own is None:  # held: the alias waits for an approval, which runs the gates again
        return replace(report, held=True)

    # The smoke test took a while: re-read the holder so the rollback target is the latest one.
    model = client.get_registered_model(name)
    previous = alias_version(model, alias)
    if previous == version:
        return replace(report, previous=previous, already_held=True)
    rivals = pending.rivals(model, alias, own)  # the holder may be a rival that wrote first and loses later
    record = {
        "previous_version": previous or "",
        "promoted_at": utc(datetime.now(timezone.utc)),
        "promoted_by": user(),
        "reason": reason,
        "forced": str(force).lower(),
        "gates": json.dumps([asdict(g) for g in gates]),
    }
    # Rivals learn from this where the alias was before this version, should this promotion lose.
    pending.mark(client, name, own, version, pending.CHECKING, previous or "")
    tags = audit.keys(alias, record)
    before = audit.tag_then_point(client, name, alias, version, tags, [], version)
    pending.mark(client, name, own, version, pending.WRITTEN, previous or "")
    until = pending.deadline()  # one deadline for all the waiting below: docs/registry.md promises 2 minutes
    holder, seen = pending.settle(client, name, alias, own, until)
    # Later reads know more (a rival's `previous` appears once it is about to write).
    rivals.update({v: intent for v, intent in seen.items() if intent.get("previous") is not None or v not in rivals})
    if holder != version:
        # This promotion did not take: its version's record goes back to what it was, so that a chain of
        # holders passing through this version (an earlier holder) is not rewritten by a failed attempt.
        audit.put_back(client, name, version, before, list(tags))
        return _superseded(client, replace(report, previous=previous), holder, reason, acknowledged)
    pending.mark(client, name, own, version, pending.WON, previous or "")
    pending.await_losers(client, name, alias, own, version, until)
    before_race = pending.skip_losers(previous or "", rivals)
    if before_race != (previous or ""):
        client.set_model_version_tag(name, version, audit.key(alias, "previous_version"), before_race)
    audit.sync_history(client, name, alias)
    # Read back last: success is reported only if this version still holds the alias now.
    holder = alias_version(client.get_registered_model(name), alias)
    if holder != version:
        audit.put_back(client, name, version, before, list(tags))
        return _superseded(client, replace(report, previous=before_race or None), holder, reason, acknowledged)
    report = replace(report, previous=before_race or None, promoted=True)
    _record(client, report, audit.DONE, reason, acknowledged)
    return report


def _superseded(
    client: MlflowClient, report: PromotionReport, holder: str | None, reason: str, acknowledged: str
) -> PromotionReport:
    report = replace(report, superseded_by=holder or "")
    _record(client, report, audit.SUPERSEDED, reason, acknowledged, note=f"v{holder or '-'} holds the alias")
    return report


def copy(source_uri: str, name: str) -> CopyResult:
    """The new version of `name` copied from `source_uri` (models:/NAME/VERSION or models:/NAME@ALIAS)."""
    if problem := model_name_problem(name):
        raise UserError(f"{shortened(name)!r} is not a valid MLflow model name: {problem}.")
    source = resolve_version(source_uri)
    client = MlflowClient()
    version = str(source.version)
    # Pinned to the resolved version: the alias may move while the copy is made.
    try:
        copied = client.copy_model_version(models_uri(source.name, version), name)
    except MlflowException as exc:
        denied = _copy_denied(exc, source.name, name)
        if denied is None:
            raise
        raise denied from exc
    copy_version = str(copied.version)
    # The copy inherits every tag; the promotion records name versions of the source model, and a rollback
    # under the new name must never follow them.
    for tag in copied.tags:
        if tag.startswith("promotion."):
            client.delete_model_version_tag(name, copy_version, tag)
    lineage = {
        "source_model": source.name,
        "source_version": version,
        "source_run_id": source.run_id or "",
        "source_uri": source_uri,
        "copied_at": utc(datetime.now(timezone.utc)),
        "copied_by": user(),
    }
    for tag, value in lineage.items():
        client.set_model_version_tag(name, copy_version, tag, value)
    return CopyResult(
        source_uri=source_uri, source_name=source.name, source_version=version, name=name, version=copy_version
    )


def _copy_denied(exc: MlflowException, source_name: str, name: str) -> UserError | None:
    """The permission a 403 during a copy lacked, as a UserError; None for any other failure."""
    if exc.error_code == DENIED:  # creating the registered model `name`, which did not exist yet
        return UserError(
            f"The tracking server refused to create registered model {name!r} (HTTP 403): the user in "
            "MLFLOW_TRACKING_USERNAME may not create registered models. Ask an admin of the server for that right, "
            "or copy into a registered model on which you have EDIT permission."
        )
    # MLflow rewraps a refused create_model_version as "the backend may not yet support model version URI
    # sources", which a server does: the 403 is the cause.
    cause = exc.__cause__
    if isinstance(cause, MlflowException) and cause.error_code == DENIED:
        return UserError(
            f"The tracking server refused to add a version to registered model {name!r} (HTTP 403): the user in "
            f"MLFLOW_TRACKING_USERNAME needs EDIT (or MANAGE) permission on {name!r} and READ on {source_name!r}. "
            "Ask an admin or a MANAGE holder of the model to grant it."
        )
    return None
