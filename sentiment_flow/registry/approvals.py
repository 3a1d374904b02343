"""Pending approval requests: one registered-model tag `approval.<alias>.<version>.<id>` per request that a
user without MANAGE made to move a protected alias, written once the gates passed, read by `approve` and
`status`, deleted when it is approved.

The tag's JSON holds who asked and when (the server's authenticated name; the governance app refuses any
other), the alias's holder then (the request is stale once it moved), the gate summary and the evidence the
approver re-runs the gates on: the frozen evaluation data (path and digest), the evaluation runs and the
PromotionConfig. Within AUDIT_VALUE_LIMIT characters, like an audit record.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel

from sentiment_flow.config import PromotionConfig
from sentiment_flow.errors import UserError
from sentiment_flow.registry.audit import AUDIT_VALUE_LIMIT
from sentiment_flow.store import alias_version

log = logging.getLogger(__name__)

APPROVAL_PREFIX = "approval"


@dataclass(frozen=True)
class ApprovalRequest:
    """One pending request to point `alias` at `version`, as `promote` wrote it."""

    version: str
    alias: str
    requested_by: str  # the tracking server's authenticated user
    requested_at: str  # UTC, to the microsecond: the newest request for a (version, alias) is the open one
    holder: str  # the alias's holder when it was requested ("" if none): another holder now makes it stale
    gates: str  # "gate=outcome ..." of the gates that passed
    config: dict  # the PromotionConfig the gates ran with; `approve` re-runs them with it
    data_digest: str = ""  # the frozen evaluation set's digest ("" where the gates compared recorded metrics)
    data_path: str = ""  # where that set was read from
    evaluation_runs: tuple[str, ...] = ()  # the runs of `mlflow.models.evaluate` behind the same-data gates
    forced: bool = False
    reason: str = ""
    despite_rollback: bool = False
    key: str = field(default="", compare=False)  # the tag that holds it; not part of its JSON

    def stale(self, model: RegisteredModel) -> bool:
        """Whether the alias moved since the request (approving it would overrule a move nobody approved)."""
        return (alias_version(model, self.alias) or "") != self.holder

    def promotion_config(self) -> PromotionConfig:
        """The recorded PromotionConfig (fields a later version no longer knows are dropped)."""
        known = {f.name for f in fields(PromotionConfig)}
        return PromotionConfig(**{k: v for k, v in self.config.items() if k in known})


def new_request(
    version: str, alias: str, requested_by: str, holder: str | None, gates: str, config: PromotionConfig, **evidence
) -> ApprovalRequest:
    """A request stamped now; `evidence` holds any of data_digest, data_path, evaluation_runs, forced, reason and
    despite_rollback."""
    return ApprovalRequest(
        version=version,
        alias=alias,
        requested_by=requested_by,
        requested_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        holder=holder or "",
        gates=gates,
        config=asdict(config),
        **evidence,
    )


def encode(request: ApprovalRequest) -> str:
    """The request as the JSON its tag holds; a UserError if it cannot fit AUDIT_VALUE_LIMIT characters."""
    value = asdict(request)
    del value["key"]
    text = json.dumps(value, ensure_ascii=False)  # PostgreSQL counts characters, as in audit.encode
    if len(text) > AUDIT_VALUE_LIMIT:  # only a --reason near its limit and a long --eval-data path get here
        raise UserError(
            f"The approval request would take {len(text)} characters; a registered-model tag holds at most "
            f"{AUDIT_VALUE_LIMIT}. Shorten --reason (or the --eval-data path) and promote again."
        )
    return text


def write(client: MlflowClient, name: str, request: ApprovalRequest) -> ApprovalRequest:
    """`request`, written as a new tag of registered model `name` (the requester's earlier requests for the same
    version and alias are withdrawn: the new one replaces them)."""
    earlier = [
        r.key
        for r in pending(client.get_registered_model(name))
        if (r.version, r.alias, r.requested_by) == (request.version, request.alias, request.requested_by)
    ]
    stamp = request.requested_at.replace(":", "").replace("-", "")
    key = f"{APPROVAL_PREFIX}.{request.alias}.{request.version}.{stamp}.{uuid.uuid4().hex[:8]}"
    client.set_registered_model_tag(name, key, encode(request))
    for tag in earlier:
        client.delete_registered_model_tag(name, tag)
    return ApprovalRequest(**{**asdict(request), "key": key})


def pending(model: RegisteredModel) -> tuple[ApprovalRequest, ...]:
    """Every pending approval request of the registered model, newest first."""
    known = {f.name for f in fields(ApprovalRequest)} - {"key"}
    found = []
    for tag, value in model.tags.items():
        if not tag.startswith(f"{APPROVAL_PREFIX}."):
            continue
        try:
            loaded = {k: v for k, v in json.loads(value).items() if k in known}
            loaded["evaluation_runs"] = tuple(loaded.get("evaluation_runs", ()))
            found.append(ApprovalRequest(**loaded, key=tag))
        except (ValueError, TypeError):
            log.warning("Skipping the unreadable approval request %s of %s", tag, model.name)
    return tuple(sorted(found, key=lambda r: r.requested_at, reverse=True))


def open_request(model: RegisteredModel, version: str, alias: str) -> ApprovalRequest | None:
    """The newest pending request to point `alias` at `version`, if any."""
    return next((r for r in pending(model) if (r.version, r.alias) == (version, alias)), None)
