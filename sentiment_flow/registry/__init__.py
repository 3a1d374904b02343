"""Registry promotion: gate a version, point an alias at it, roll back, copy across names (MlflowClient only).

Every function takes plain arguments, works on the registry at the current tracking URI (sqlite or a
`mlflow server` over HTTP) and returns a result object; only `cli.py` prints. MLflow 3 aliases and
tags throughout, never the deprecated stages.

Modules: gates (the gate table), evaluations and comparison (the same-data gates), audit (promotion tags, alias
history), pending (concurrent promotions), commands (status, promote, copy), rollbacks (rollback), reports (what
they return), rows (a gate-table row); on a team server with --auth, identity (who the server says the user is,
MANAGE, protected aliases), approvals (pending approval requests) and governed (promote that asks for an
approval, approve). Store look-ups, URI resolution and the one models:/ builder are in
sentiment_flow/store.py, which every stage shares.

Metrics: gates 2-3 compare the candidate and the champion on one frozen evaluation set (--eval-data, else the
champion's logged test dataset), each evaluated once per dataset digest by `mlflow.models.evaluate`. Where
there is none (versions from before training logged datasets), a version's `test_f1_macro` and
`test_accuracy` are read from its source run's metrics, the authoritative record written by training; where
that run is not in this store (deleted, or the version was copied from another tracking server) the version
tags training wrote with the same values stand in.

Audit trail and rollback: every promotion, refusal (by a gate, or of a rolled-back version), forced
promotion, superseded promotion and rollback (also a refused or superseded one) appends one registered-model
tag `audit.A.<UTC time>.<id>` once its outcome is known: JSON with event, outcome, alias, from/to version,
by, at, reason, forced, the rollback it acknowledged and a `gate=outcome` summary, under the 5000 characters
of the SQL stores' tag column. No command rewrites or deletes one; `status` lists them, newest first. Dry
runs and no-ops write none. A record that cannot be written (a user who may only read) is logged; the
refusal or the alias move stands.

The chain rollback follows lives on the versions. Promoting version V to alias A writes on V, before the
alias moves:

    promotion.A.previous_version   the version that held A before ("" if none): where rollback goes
    promotion.A.promoted_at, .promoted_by, .reason, .forced, .gates (the gate table as JSON)

then points A at V. Rollback reads `promotion.A.previous_version` on the version that holds A now and
points A there; rolling back again walks one step further. A version once rolled back from A is promoted
to A again only with `despite_rollback` (--despite-rollback), and that record names the rollback. The
registered model's tag `alias_history.A` is the chain as a JSON list, newest first, derived from the version
tags after every alias move.

Concurrency, without a lock: MLflow has no compare-and-set on aliases, so of two promotions racing for
A the later `set_registered_model_alias` wins. Each promotion announces itself before its gates with a
registered-model tag `promotion_pending.A.<id>` (the version, whether it has written the alias yet, and its
host, pid and process start time), and after its own write waits until no other announced promotion is
still before its write. A rollback announces itself the same way before it reads the holder. Then the
alias's holder is final for the whole overlapping group: the command whose version holds it succeeds,
every other one reports that it was superseded (a promotion puts its version's tags back as they were) and
exits 1. The winner's `previous_version` skips the group's losers (each announcement carries the holder it
replaced), so rollback never goes to a version whose promotion failed. The history tag is rebuilt from
the version tags and re-checked against the alias until both agree, and the alias is read back once
more at the end. An announcement from a process on this host that is gone counts for nothing at once, one
from elsewhere after STALE_AFTER; all of one command's waiting shares one deadline, SETTLE_TIMEOUT.

Failures change nothing: the gates only read; tags are written first and the alias last, and if a write
raises before the alias has moved, the version's tags are put back as they were.
"""

from sentiment_flow.errors import Refused
from sentiment_flow.registry.approvals import ApprovalRequest
from sentiment_flow.registry.audit import AuditRecord, HistoryEntry
from sentiment_flow.registry.commands import copy, status
from sentiment_flow.registry.governed import approve, promote
from sentiment_flow.registry.reports import CopyResult, ModelStatus, PromotionReport, RollbackResult, VersionStatus
from sentiment_flow.registry.rollbacks import rollback
from sentiment_flow.registry.rows import Gate
from sentiment_flow.store import models_uri, resolve_version

__all__ = [
    "ApprovalRequest",
    "AuditRecord",
    "CopyResult",
    "Gate",
    "HistoryEntry",
    "ModelStatus",
    "PromotionReport",
    "Refused",
    "RollbackResult",
    "VersionStatus",
    "approve",
    "copy",
    "models_uri",
    "promote",
    "resolve_version",
    "rollback",
    "status",
]
