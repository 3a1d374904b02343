"""Registry promotion: gate a version, point an alias at it, roll back, copy across names (MlflowClient only).

Every function takes plain arguments, works on the registry at the current tracking URI (sqlite or a
`mlflow server` over HTTP) and returns a result object; only `cli.py` prints. MLflow 3 aliases and
tags throughout, never the deprecated stages.

Modules: store (lookups, URI resolution, the one models:/ builder), gates (the gate table), evaluations and
comparison (the same-data gates), audit (promotion tags, alias history), pending (concurrent promotions),
commands (status, promote, rollback, copy), reports (what they return), rows (a gate-table row).

Metrics: gates 2-3 compare the candidate and the champion on one frozen evaluation set (--eval-data, else the
champion's logged test dataset), each evaluated once per dataset digest by `mlflow.models.evaluate`. Where
there is none (versions from before training logged datasets), a version's `test_f1_macro` and
`test_accuracy` are read from its source run's metrics, the authoritative record written by training; where
that run is not in this store (deleted, or the version was copied from another tracking server) the version
tags training wrote with the same values stand in.

Audit trail and rollback: the tags on each version are the source of truth. Promoting version V to
alias A writes on V, before the alias moves:

    promotion.A.previous_version   the version that held A before ("" if none): where rollback goes
    promotion.A.promoted_at, .promoted_by, .reason, .forced, .gates (the gate table as JSON)

then points A at V. Rollback reads `promotion.A.previous_version` on the version that holds A now and
points A there (tagging the version it leaves `promotion.A.rolled_back_*`); rolling back again walks
one step further. The registered model's tag `alias_history.A` is that same chain as a JSON list,
newest first, derived from the version tags after every alias move.

Concurrency, without a lock: MLflow has no compare-and-set on aliases, so of two promotions racing for
A the later `set_registered_model_alias` wins. Each promotion announces itself before its gates with a
registered-model tag `promotion_pending.A.<id>` (the version, and whether it has written the alias yet),
and after its own write waits until no other announced promotion is still before its write. Then the
alias's holder is final for the whole overlapping group: the promotion whose version holds it succeeds,
every other one reports that it was superseded, puts its version's tags back as they were, and exits 1.
The winner's `previous_version` skips the group's losers (each announcement carries the holder it
replaced), so rollback never goes to a version whose promotion failed. The history tag is rebuilt from
the version tags and re-checked against the alias until both agree, and the alias is read back once
more at the end.

Failures change nothing: the gates only read; tags are written first and the alias last, and if a write
raises before the alias has moved, the version's tags are put back as they were.
"""

from sentiment_flow.registry.audit import AuditRecord, HistoryEntry
from sentiment_flow.registry.commands import copy, promote, rollback, status
from sentiment_flow.registry.rows import Gate
from sentiment_flow.registry.reports import CopyResult, ModelStatus, PromotionReport, Refused, RollbackResult, VersionStatus
from sentiment_flow.registry.store import models_uri, resolve_version

__all__ = [
    "AuditRecord", "CopyResult", "Gate", "HistoryEntry", "ModelStatus", "PromotionReport", "Refused", "RollbackResult",
    "VersionStatus", "copy", "models_uri", "promote", "resolve_version", "rollback", "status",
]
