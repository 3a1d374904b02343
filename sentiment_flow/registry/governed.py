"""Two-person approval of protected aliases on a team server with `--auth`.

`promote` by a user who is neither an admin nor holds MANAGE on the registered model runs the gates as ever,
but where they pass it writes an approval request (registry.approvals) instead of moving a protected alias.
`approve` by another user with MANAGE re-runs the gates on the same frozen data with the recorded config and
moves the alias through `commands.promote` (concurrency handling, version tags, history, audit record naming
requester and approver). Identities are the server's (registry.identity), never a name the user typed. On a
local store, or a server without users, `promote` is `commands.promote` and `approve` has nothing to approve.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from mlflow import MlflowClient

from sentiment_flow.config import CHAMPION, PromotionConfig
from sentiment_flow.errors import Refused, UserError
from sentiment_flow.registry import approvals, audit, commands, identity
from sentiment_flow.registry.evaluations import DIGEST_TAG, EXPERIMENT, MODEL_TAG, VERSION_TAG, eval_set
from sentiment_flow.registry.reports import Approval, PromotionReport
from sentiment_flow.store import alias_version, check_alias, equals, get_version, registered_model


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
) -> PromotionReport:
    """`commands.promote`'s report; for a protected alias on a team server and a user without MANAGE, the alias
    stays and, if every gate passes, the report's `request` is the approval request written instead."""
    promotion = partial(
        commands.promote,
        name,
        version,
        alias,
        config=config,
        dry_run=dry_run,
        force=force,
        reason=reason,
        despite_rollback=despite_rollback,
    )
    requester = _requester(name, alias)
    if requester is None:
        return promotion()
    report = promotion(hold=True)
    if report.dry_run:  # says that an approval would be requested
        return replace(report, held=not report.failed)
    if not report.held:  # refused (and recorded), or the alias holds the version already
        return report
    client = MlflowClient()
    if config.eval_data:  # the approver's working directory is not the requester's
        config = replace(config, eval_data=str(Path(config.eval_data).expanduser().resolve()))
    digest, path, runs = _frozen_data(client, report, config)
    request = approvals.new_request(
        report.version,
        alias,
        requester,
        report.previous,
        " ".join(f"{g.gate}={g.outcome}" for g in report.gates),
        config,
        data_digest=digest,
        data_path=path,
        evaluation_runs=runs,
        forced=force,
        reason=audit.check_reason(reason),
        despite_rollback=despite_rollback,
    )
    request = approvals.write(client, name, request)
    # The request's tag goes once approved; the trail keeps that it was made.
    record = audit.new_record(
        audit.PROMOTE,
        audit.REQUESTED,
        alias,
        report.previous,
        report.version,
        reason=request.reason,
        forced=force,
        gates=request.gates,
        requested_by=requester,
    )
    audit.append(client, name, record)
    return replace(report, request=request)


def approve(name: str, version: str, alias: str, reason: str = "") -> PromotionReport:
    """The report of the promotion that approving the pending request for (`version`, `alias`) ran.

    Refused (and recorded in the audit trail) when there is no such request, the approver asked for it, lacks
    MANAGE, the alias moved since the request, or the frozen evaluation data changed; a gate failing now is
    refused as in `promote`, the alias unchanged and the request kept.
    """
    reason = audit.check_reason(reason)
    check_alias(alias)
    me = identity.current()
    if me is None:
        raise UserError(
            "`approve` approves a request on a team server with --auth: set MLFLOW_TRACKING_URI to its URL and "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD to your user. On a local store `promote` moves "
            "the alias itself."
        )
    client = MlflowClient()
    model = registered_model(client, name)
    version = str(get_version(client, name, version).version)
    request = approvals.open_request(model, version, alias)
    if request is None:
        listed = ", ".join(f"v{r.version} -> @{r.alias}" for r in approvals.pending(model)) or "none"
        raise Refused(
            f"No pending approval request to point {name}@{alias} at version {version} (pending for {name}: "
            f"{listed}). The requester runs `sentiment-flow promote {name} --version {version} --alias {alias}` first."
        )
    problem = _why_not(client, model, request, me)
    if problem:
        holder = alias_version(model, alias)
        record = audit.new_record(
            audit.PROMOTE,
            audit.REFUSED,
            alias,
            holder,
            version,
            reason=request.reason,
            note=problem,
            requested_by=request.requested_by,
            approval_reason=reason,
        )
        audit.append(client, name, record)
        raise Refused(problem)
    report = commands.promote(
        name,
        version,
        alias,
        config=request.promotion_config(),
        force=request.forced,
        reason=request.reason,
        despite_rollback=request.despite_rollback,
        approval=Approval(request.requested_by, me.username, reason),
    )
    if report.promoted or report.already_held:
        client.delete_registered_model_tag(name, request.key)  # approved: no longer pending
    return report


def _requester(name: str, alias: str) -> str | None:
    """The authenticated user who must ask for an approval to move `alias` of `name`; None if they may move it."""
    me = identity.current()
    if me is None or me.is_admin or alias not in identity.protected_aliases() or identity.holds_manage(name):
        return None
    return me.username


def _why_not(client: MlflowClient, model, request: approvals.ApprovalRequest, me: identity.Identity) -> str:
    """Why `me` may not approve `request` now ("" if they may)."""
    name, alias, by, at = model.name, request.alias, request.requested_by, request.requested_at[:19]
    again = f"`sentiment-flow promote {name} --version {request.version} --alias {alias}`"
    if me.username == by:
        return (
            f"{by} requested this promotion ({at}): a requester can never approve their own request. Another "
            f"user with MANAGE on {name} runs `sentiment-flow approve {name} --version {request.version} "
            f"--alias {alias}`."
        )
    if not (me.is_admin or identity.holds_manage(name)):
        return (
            f"User {me.username!r} lacks MANAGE permission on registered model {name!r}, which approving takes "
            "(the server refuses the alias move too). Ask a user who holds it, or an admin to grant it."
        )
    if request.stale(model):
        now = alias_version(model, alias)
        return (
            f"The request is stale: {name}@{alias} pointed at {_held(request.holder)} when {by} asked ({at}) and "
            f"points at {_held(now)} now. {by} asks again with {again}, which gates against the current holder."
        )
    digest = _frozen_data(client, _as_report(model, request), request.promotion_config())[0]
    if digest != request.data_digest:
        return (
            f"The evaluation data changed since the request: the gates ran on {request.data_path or 'recorded metrics'}"
            f" (digest {request.data_digest or 'none'}), which is now {digest or 'not there'}. {by} asks again "
            f"with {again}."
        )
    return ""


def _frozen_data(
    client: MlflowClient, report: PromotionReport, config: PromotionConfig
) -> tuple[str, str, tuple[str, ...]]:
    """The digest and path of the evaluation set the same-data gates use for `report`, and the evaluation runs
    on it; ("", "", ()) where the gates compare the metrics each training recorded."""
    other = report.champion if report.champion != report.version else None
    data, _ = eval_set(client, client.get_model_version(report.name, other) if other else None, config.eval_data)
    if data is None:
        return "", "", ()
    digest = data.dataset.digest
    found = client.get_experiment_by_name(EXPERIMENT)
    versions = [v for v in (report.version, other) if v]
    query = " and ".join((equals(f"tags.`{MODEL_TAG}`", report.name), equals(f"tags.`{DIGEST_TAG}`", digest)))
    runs = client.search_runs([found.experiment_id], query) if found else []
    ids = tuple(run.info.run_id for run in runs if run.data.tags.get(VERSION_TAG) in versions)
    return digest, data.dataset.source.to_dict().get("uri", ""), ids


def _as_report(model, request: approvals.ApprovalRequest) -> PromotionReport:
    """A report of the request's promotion as far as `_frozen_data` reads it: which versions the gates compare."""
    return PromotionReport(
        model.name, request.version, request.alias, request.holder or None, alias_version(model, CHAMPION), ()
    )


def _held(version: str | None) -> str:
    return f"version {version}" if version else "no version"
