"""Registry promotion: gate a version, point an alias at it, roll back, copy across names (MlflowClient only).

Every function takes plain arguments, works on the registry at the current tracking URI (sqlite or a
`mlflow server` over HTTP) and returns a result object; only `cli.py` prints. MLflow 3 aliases and
tags throughout, never the deprecated stages.

Metrics: a version's `test_f1_macro` and `test_accuracy` are read from its source run's metrics, the
authoritative record written by training; where that run is not in this store (deleted, or the version
was copied from another tracking server) the version tags training wrote with the same values stand in.

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

from __future__ import annotations

import getpass
import json
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.types import DataType

from sentiment_flow.config import ALIASES, CANARY_TEXTS, CHAMPION, LABELS, PromotionConfig
from sentiment_flow.errors import UserError, one_line, redact_uri

log = logging.getLogger(__name__)

KEY_METRICS = ("test_f1_macro", "test_accuracy")
READY = "READY"
FINISHED = "FINISHED"
# Written by training when it registers a version, after every other step; a version without it was not
# registered by a training that got that far.
TRAINING_TAGS = ("mlflow_run_id",)
PASS, FAIL, FORCED, SKIPPED = "pass", "fail", "forced", "skipped"
FORCEABLE = ("min_f1_macro", "no_regression")  # gates 2-3; --force never skips readiness or the smoke test
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
INVALID = "INVALID_PARAMETER_VALUE"
# Metrics come back from the store as floats and from tags rounded to 4 digits: a tie must not fail by 1e-17.
EPSILON = 1e-9
HISTORY_LIMIT = 20  # entries kept in the alias_history tag; rollback itself follows version tags without limit
SYNC_ATTEMPTS = 5  # rebuilds of the history tag while concurrent promotions keep moving the alias
HISTORY_FIELDS = ("previous_version", "promoted_at", "promoted_by", "reason")  # HistoryEntry's, read from tags
# A promotion in flight, announced on the registered model: promotion_pending.<alias>.<id> -> JSON.
PENDING_PREFIX = "promotion_pending"
CHECKING, WRITTEN, WON = "checking", "written", "won"  # before its write, after it, holding the alias after all
SETTLE_TIMEOUT = 120.0  # seconds to wait for overlapping promotions to write before reading the holder anyway
STALE_AFTER = 900.0  # seconds after which an announcement is a leftover of a killed process and ignored
SETTLE_POLL = 0.5  # seconds between reads while waiting: 8 racers polling faster slowed an auth server down
MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


class Refused(UserError):
    """The registry's state forbids the request (e.g. nothing to roll back to); exits 1 like a failed gate."""

    exit_code = 1


@dataclass(frozen=True)
class Gate:
    """One row of the gate table."""

    gate: str
    candidate: str
    champion: str
    threshold: str
    outcome: str  # pass | fail | forced (failed, overridden by --force) | skipped (an earlier gate failed)
    note: str = ""


@dataclass(frozen=True)
class PromotionReport:
    """What `promote` found and did: the gate rows, the alias's holder before, whether the alias moved."""

    name: str
    version: str
    alias: str
    previous: str | None  # the alias's holder before this promotion
    champion: str | None  # the version the no-regression gate compared against
    gates: tuple[Gate, ...]
    promoted: bool = False  # this call pointed the alias at `version`
    superseded_by: str | None = None  # where an overlapping promotion moved the alias before this one finished
    already_held: bool = False
    dry_run: bool = False
    forced: bool = False

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the gates that failed (forced ones do not count)."""
        return tuple(g.gate for g in self.gates if g.outcome == FAIL)

    @property
    def exit_code(self) -> int:
        """0 promoted, already held, or a dry run that would pass; 1 refused by a gate or superseded."""
        return 0 if self.promoted or self.already_held or (self.dry_run and not self.failed) else 1

    @property
    def summary(self) -> str:
        """One sentence on the outcome, naming what to do next."""
        target = f"{self.name}@{self.alias}"
        before = f"version {self.previous}" if self.previous else "no version"
        if self.already_held:
            return f"{target} already points at version {self.version}: nothing to do."
        if self.superseded_by is not None:
            now = f"version {self.superseded_by}" if self.superseded_by else "no version"
            return (
                f"Not promoted: another promotion running at the same time pointed {target} at {now} after this "
                f"one pointed it at version {self.version}; it stays at {now}. Check "
                f"`sentiment-flow status {self.name}` and promote again if version {self.version} should have it."
            )
        if self.dry_run and not self.failed:
            return (
                f"Dry run, nothing changed: every gate passes; without --dry-run {target} would move "
                f"from {before} to version {self.version}."
            )
        if self.dry_run:
            return f"Dry run, nothing changed: version {self.version} would be refused by {', '.join(self.failed)}."
        if self.promoted:
            return (
                f"{target} now points at version {self.version} (before: {before}); undo with "
                f"`sentiment-flow rollback {self.name} --alias {self.alias}`."
            )
        hint = ""
        if set(self.failed) <= set(FORCEABLE):
            hint = " To override these two gates deliberately, add --force --reason TEXT (recorded on the version)."
        return f"Refused by {', '.join(self.failed)}: {target} still points at {before}.{hint}"


@dataclass(frozen=True)
class HistoryEntry:
    """One holder of an alias, as recorded on that version when it was promoted."""

    version: str
    previous_version: str  # "" for the first holder, or when the alias was set outside `promote`
    promoted_at: str
    promoted_by: str
    reason: str


@dataclass(frozen=True)
class RollbackResult:
    """Where the alias pointed before and after, and its history after the rollback."""

    name: str
    alias: str
    from_version: str
    to_version: str
    history: tuple[HistoryEntry, ...]


@dataclass(frozen=True)
class CopyResult:
    """The copied version and the version it was copied from."""

    source_uri: str
    source_name: str
    source_version: str
    name: str
    version: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class VersionStatus:
    """One version as `status` shows it."""

    version: str
    status: str
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    lang: str
    base_model: str
    created_at: str
    promoted_at: dict[str, str]  # alias -> when this version got it, for the aliases it holds now


@dataclass(frozen=True)
class ModelStatus:
    """Every version of a registered model, newest first, and the history of each alias it has."""

    name: str
    versions: tuple[VersionStatus, ...]
    histories: dict[str, tuple[HistoryEntry, ...]]


@dataclass(frozen=True)
class _Evidence:
    metrics: dict[str, float]
    source: str  # where the metrics were found, for the gate table
    searched: str  # where they were looked for
    data_hash: str  # "" when unknown
    run_status: str | None  # the source run's status; None when that run is not in this store


# ---------------------------------------------------------------------------------------------------------
# Commands


def status(name: str) -> ModelStatus:
    """Every version of `name` with aliases, test metrics, lineage and times; each alias's history."""
    client = MlflowClient()
    model = _registered_model(client, name)
    held: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        held.setdefault(str(version), []).append(alias)
    rows = []
    for mv in _all_versions(client, name):
        aliases = tuple(sorted(held.get(str(mv.version), ())))
        rows.append(
            VersionStatus(
                version=str(mv.version),
                status=mv.status,
                aliases=aliases,
                metrics=_evidence(client, mv).metrics,
                lang=mv.tags.get("lang", ""),
                base_model=mv.tags.get("base_model", ""),
                created_at=_utc(datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc)),
                promoted_at={alias: mv.tags.get(_key(alias, "promoted_at"), "") for alias in aliases},
            )
        )
    rows.sort(key=lambda row: int(row.version), reverse=True)
    histories = {alias: _chain(client, name, alias) for alias in sorted(model.aliases)}
    return ModelStatus(name=name, versions=tuple(rows), histories=histories)


def promote(
    name: str,
    version: str,
    alias: str,
    *,
    config: PromotionConfig = PromotionConfig(),
    dry_run: bool = False,
    force: bool = False,
    reason: str = "",
) -> PromotionReport:
    """The gate report for `version`; when every gate passes (and not a dry run) `alias` points at it."""
    reason = reason.strip()
    if force and not reason:
        raise UserError(
            "--force needs --reason: say why gates 2-3 are overridden, e.g. --reason 'hotfix for ticket 123'; "
            "the reason is recorded on the version."
        )
    _check_alias(alias)
    client = MlflowClient()
    model = _registered_model(client, name)
    candidate = _version(client, name, version)
    version = str(candidate.version)  # the store returns an int
    previous = _alias_version(model, alias)
    report = PromotionReport(
        name=name, version=version, alias=alias, previous=previous, champion=None, gates=(),
        dry_run=dry_run, forced=force,
    )
    if previous == version:
        return replace(report, already_held=True)

    # Announced before the gates, so that promotions overlapping this one wait for it, and it for them.
    pending = None if dry_run else _announce(client, name, alias, version)
    try:
        return _gate_and_point(client, report, candidate, model, config, force, reason, pending)
    finally:
        if pending:
            client.delete_registered_model_tag(name, pending)


def _gate_and_point(
    client: MlflowClient, report: PromotionReport, candidate: ModelVersion, model: RegisteredModel,
    config: PromotionConfig, force: bool, reason: str, pending: str | None,
) -> PromotionReport:
    name, version, alias = report.name, report.version, report.alias
    # 1-4: read only; nothing is written unless every gate passes.
    champion_version = _alias_version(model, CHAMPION)
    champion = client.get_model_version(name, champion_version) if champion_version else None
    gates = tuple(_gates(client, candidate, champion, config, force))
    report = replace(report, champion=champion_version, gates=gates)
    if report.failed or report.dry_run:
        return report

    # The smoke test took a while: re-read the holder so the rollback target is the latest one.
    model = client.get_registered_model(name)
    previous = _alias_version(model, alias)
    if previous == version:
        return replace(report, previous=previous, already_held=True)
    rivals = _rivals(model, alias, pending)  # the holder may be a rival that wrote first and loses later
    audit = {
        "previous_version": previous or "",
        "promoted_at": _utc(datetime.now(timezone.utc)),
        "promoted_by": _user(),
        "reason": reason,
        "forced": str(force).lower(),
        "gates": json.dumps([asdict(g) for g in gates]),
    }
    # A version rolled away from earlier and promoted again: its old rollback record no longer applies.
    stale = [_key(alias, k) for k in ("rolled_back_at", "rolled_back_by", "rolled_back_to", "rolled_back_reason")]
    # Rivals learn from this where the alias was before this version, should this promotion lose.
    _mark(client, name, pending, version, CHECKING, previous or "")
    tags = _keys(alias, audit)
    before = _tag_then_point(client, name, alias, version, tags, stale, version)
    _mark(client, name, pending, version, WRITTEN, previous or "")
    holder, seen = _settle(client, name, alias, pending)
    # Later reads know more (a rival's `previous` appears once it is about to write).
    rivals.update({v: intent for v, intent in seen.items() if intent.get("previous") is not None or v not in rivals})
    if holder != version:
        # This promotion did not take: its version's record goes back to what it was, so that a chain of
        # holders passing through this version (an earlier holder) is not rewritten by a failed attempt.
        _put_back(client, name, version, before, [*tags, *stale])
        return replace(report, previous=previous, superseded_by=holder or "")
    _mark(client, name, pending, version, WON, previous or "")
    _await_losers(client, name, alias, pending, version)
    before_race = _skip(previous or "", rivals)
    if before_race != (previous or ""):
        client.set_model_version_tag(name, version, _key(alias, "previous_version"), before_race)
    _sync_history(client, name, alias)
    # Read back last: success is printed only if this version still holds the alias now.
    holder = _alias_version(client.get_registered_model(name), alias)
    if holder != version:
        _put_back(client, name, version, before, [*tags, *stale])
        return replace(report, previous=before_race or None, superseded_by=holder or "")
    return replace(report, previous=before_race or None, promoted=True)


def rollback(name: str, alias: str = CHAMPION, reason: str = "") -> RollbackResult:
    """The alias moved back to the version that held it before its current holder was promoted."""
    _check_alias(alias)
    client = MlflowClient()
    model = _registered_model(client, name)
    current = _alias_version(model, alias)
    if current is None:
        raise UserError(
            f"{name} has no alias {alias!r} (its aliases: {', '.join(sorted(model.aliases)) or 'none'}); "
            f"nothing to roll back. Promote a version first: "
            f"sentiment-flow promote {name} --version V --alias {alias}."
        )
    holder = client.get_model_version(name, current)
    target = holder.tags.get(_key(alias, "previous_version"), "")
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
        raise Refused(
            f"Cannot roll back {name}@{alias} to version {target}: it is {target_version.status}, not READY."
        )
    audit = {
        "rolled_back_at": _utc(datetime.now(timezone.utc)),
        "rolled_back_by": _user(),
        "rolled_back_to": target,
        "rolled_back_reason": reason.strip(),
    }
    _tag_then_point(client, name, alias, current, _keys(alias, audit), [], target)
    history = _sync_history(client, name, alias)
    return RollbackResult(name=name, alias=alias, from_version=current, to_version=target, history=history)


def resolve_version(model_uri: str) -> ModelVersion:
    """The version a registry URI (models:/NAME/VERSION or models:/NAME@ALIAS) points at now.

    Raises a UserError that names the versions or aliases that do exist.
    """
    match = MODELS_URI.match(model_uri)
    if not match:
        raise UserError(
            f"{model_uri!r} is not a registry model URI; use models:/NAME/VERSION or models:/NAME@ALIAS, "
            f"e.g. models:/sentiment-english@champion."
        )
    client = MlflowClient()
    model = _registered_model(client, match["name"])
    version = match["version"]
    if match["alias"]:
        version = _alias_version(model, match["alias"])
        if version is None:
            raise UserError(
                f"{model.name} has no alias {match['alias']!r} (its aliases: "
                f"{', '.join(sorted(model.aliases)) or 'none'}). Use one of those or models:/NAME/VERSION."
            )
    return _version(client, model.name, version)


def copy(source_uri: str, name: str) -> CopyResult:
    """The new version of `name` copied from `source_uri` (models:/NAME/VERSION or models:/NAME@ALIAS)."""
    source = resolve_version(source_uri)
    client = MlflowClient()
    version = str(source.version)
    # Pinned to the resolved version: the alias may move while the copy is made.
    copied = client.copy_model_version(f"models:/{source.name}/{version}", name)
    copy_version = str(copied.version)
    # The copy inherits every tag; the promotion records name versions of the source model, and a rollback
    # under the new name must never follow them.
    for key in copied.tags:
        if key.startswith("promotion."):
            client.delete_model_version_tag(name, copy_version, key)
    lineage = {
        "source_model": source.name,
        "source_version": version,
        "source_run_id": source.run_id or "",
        "source_uri": source_uri,
        "copied_at": _utc(datetime.now(timezone.utc)),
        "copied_by": _user(),
    }
    for key, value in lineage.items():
        client.set_model_version_tag(name, copy_version, key, value)
    return CopyResult(
        source_uri=source_uri, source_name=source.name, source_version=version, name=name, version=copy_version
    )


# ---------------------------------------------------------------------------------------------------------
# Gates


def _gates(
    client: MlflowClient, candidate: ModelVersion, champion: ModelVersion | None, config: PromotionConfig, force: bool
) -> list[Gate]:
    mine = _evidence(client, candidate)
    theirs = _evidence(client, champion) if champion else None
    champion_status = champion.status if champion else "none"
    # 1. Registered completely, by a training that finished, with the metrics the next gates need.
    unready = _unready(candidate, mine)
    rows = [Gate("ready", candidate.status, champion_status, READY, FAIL if unready else PASS, unready)]
    missing = [key for key in KEY_METRICS if key not in mine.metrics]
    rows.append(
        Gate(
            "test_metrics", _format_metrics(mine.metrics), _format_metrics(theirs.metrics) if theirs else "-",
            ", ".join(KEY_METRICS), FAIL if missing else PASS,
            f"{', '.join(missing)} in neither {mine.searched}; log it on the run or tag the version"
            if missing else f"from {mine.source}",
        )
    )
    # 2. Good enough in absolute terms.
    f1 = mine.metrics.get("test_f1_macro")
    rows.append(
        Gate(
            "min_f1_macro", _number(f1), "-", f">= {config.min_f1_macro:.4f}",
            _outcome(f1 is not None and f1 >= config.min_f1_macro - EPSILON, force, f1 is not None),
        )
    )
    # 3. Not worse than what serves now.
    rows.append(_regression_gate(candidate, mine, champion, theirs, config.tolerance, force))
    # 4. Serves: a failed gate above already refuses, so the (slow) load is spared.
    if any(row.outcome == FAIL for row in rows):
        note = "not run: an earlier gate failed"
        return rows + [Gate(gate, "-", "-", "-", SKIPPED, note) for gate in ("signature", "smoke_test")]
    uri = f"models:/{candidate.name}/{candidate.version}"
    return rows + [_signature_gate(uri), _smoke_gate(uri)]


def _regression_gate(
    candidate: ModelVersion, mine: _Evidence, champion: ModelVersion | None, theirs: _Evidence | None,
    tolerance: float, force: bool,
) -> Gate:
    f1 = mine.metrics.get("test_f1_macro")
    if champion is None or theirs is None:
        return Gate("no_regression", _number(f1), "none", "-", PASS, f"no {CHAMPION} yet")
    label = f"v{champion.version}"
    if str(champion.version) == str(candidate.version):
        return Gate("no_regression", _number(f1), label, "-", PASS, f"the candidate is the {CHAMPION}")
    best = theirs.metrics.get("test_f1_macro")
    if best is None:
        return Gate(
            "no_regression", _number(f1), f"{label}: missing", "-", _outcome(False, force, True),
            f"{CHAMPION} {label} has no test_f1_macro to compare with",
        )
    threshold = best - tolerance
    notes = []
    if not (mine.data_hash and theirs.data_hash):
        notes.append("cannot tell whether both were tested on the same data: a data_hash tag is missing")
    elif mine.data_hash != theirs.data_hash:
        notes.append(
            f"tested on different data (data_hash {mine.data_hash[:12]} vs {theirs.data_hash[:12]}): "
            "the comparison is indicative only"
        )
    ok = f1 is not None and f1 >= threshold - EPSILON
    bound = f">= {threshold:.4f}" + (f" (tolerance {tolerance:g})" if tolerance else "")
    return Gate(
        "no_regression", _number(f1), f"{best:.4f} ({label})", bound, _outcome(ok, force, f1 is not None),
        "; ".join(notes),
    )


def _signature_gate(uri: str) -> Gate:
    expected = "one string column"
    try:
        signature = mlflow.models.get_model_info(uri).signature
    except Exception as exc:  # noqa: BLE001 - whatever stops reading the MLmodel is what this gate reports
        return Gate("signature", "-", "-", expected, FAIL, f"cannot read the model: {_short(exc)}")
    if signature is None or signature.inputs is None:
        return Gate("signature", "none", "-", expected, FAIL, "log the model with a signature")
    inputs = signature.inputs
    columns = [] if inputs.is_tensor_spec() else inputs.inputs
    ok = len(columns) == 1 and columns[0].type == DataType.string
    return Gate("signature", str(inputs), "-", expected, PASS if ok else FAIL, "" if ok else "serving sends text")


def _smoke_gate(uri: str) -> Gate:
    expected = f"{len(CANARY_TEXTS)} rows in {{{', '.join(LABELS)}}}"
    try:
        model = mlflow.pyfunc.load_model(uri)
        # "text" is the column name MLflow's text-classification pipeline reads; serving sends the same frame.
        output = model.predict(pd.DataFrame({"text": list(CANARY_TEXTS)}))
    except Exception as exc:  # noqa: BLE001 - a model that fails to load or predict is exactly what this gate catches
        return Gate("smoke_test", "-", "-", expected, FAIL, f"load/predict failed: {_short(exc)}")
    if isinstance(output, pd.DataFrame):
        if "label" not in output:
            note = f"no label column in the output, only {list(output.columns)}"
            return Gate("smoke_test", "-", "-", expected, FAIL, note)
        output = output["label"]
    labels = list(output)
    unknown = sorted({str(label) for label in labels} - set(LABELS))
    notes = []
    if len(labels) != len(CANARY_TEXTS):
        notes.append(f"{len(labels)} predictions for {len(CANARY_TEXTS)} texts")
    if unknown:
        notes.append(f"unknown labels {', '.join(unknown)}: the model's config needs id2label = {list(LABELS)}")
    candidate = ", ".join(str(label) for label in labels[:5])
    return Gate("smoke_test", candidate, "-", expected, FAIL if notes else PASS, "; ".join(notes))


def _unready(mv: ModelVersion, evidence: _Evidence) -> str:
    """Why `mv` is not ready to serve ("" when it is)."""
    if mv.status != READY:
        return "registration has not finished (or failed); register it again"
    if evidence.run_status not in (None, FINISHED):
        return f"its source run {mv.run_id} is {evidence.run_status}, not {FINISHED}: the training did not complete"
    missing = [tag for tag in TRAINING_TAGS if tag not in mv.tags]
    if missing:
        return f"no {', '.join(missing)} tag: not registered by a training that completed"
    return ""


def _outcome(ok: bool, force: bool, measurable: bool) -> str:
    if ok:
        return PASS
    return FORCED if force and measurable else FAIL


def _evidence(client: MlflowClient, mv: ModelVersion) -> _Evidence:
    run = None
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
        except MlflowException as exc:
            if exc.error_code != NOT_FOUND:
                raise
    run_metrics = run.data.metrics if run else {}
    metrics, sources = {}, []
    for key in KEY_METRICS:
        if key in run_metrics:
            metrics[key] = run_metrics[key]
            sources.append(f"run {mv.run_id}")
        elif _is_number(mv.tags.get(key)):
            metrics[key] = float(mv.tags[key])
            sources.append("version tags")
    searched = f"run {mv.run_id} nor the version tags" if run else "the version tags nor a source run in this store"
    data_hash = mv.tags.get("data_hash") or (run.data.tags.get("data_hash", "") if run else "")
    run_status = run.info.status if run else None
    return _Evidence(metrics, " and ".join(sorted(set(sources))), searched, data_hash, run_status)


# ---------------------------------------------------------------------------------------------------------
# Writes and history


def _tag_then_point(
    client: MlflowClient, name: str, alias: str, tagged: str, tags: dict[str, str], drop: list[str], target: str
) -> dict[str, str]:
    """Write `tags` on version `tagged` (deleting `drop`), then point `alias` at `target`; returns the tags before.

    If anything raises before the alias has moved, the tags of `tagged` are put back as they were.
    """
    before = client.get_model_version(name, tagged).tags
    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, tagged, key, value)
        for key in drop:
            if key in before:
                client.delete_model_version_tag(name, tagged, key)
        client.set_registered_model_alias(name, alias, target)
    except BaseException:
        _restore_unless_moved(client, name, alias, tagged, before, [*tags, *drop], target)
        raise
    return before


def _restore_unless_moved(
    client: MlflowClient, name: str, alias: str, tagged: str, before: dict[str, str], keys: list[str], target: str
) -> None:
    try:
        # The store may have applied the alias before the error (e.g. a timeout on the reply): then the
        # tags describe what happened and stay.
        if _alias_version(client.get_registered_model(name), alias) == target:
            return
        _put_back(client, name, tagged, before, keys)
    except Exception:  # noqa: BLE001 - the original error is the one to raise; this one is only logged
        log.exception("Could not restore the tags of %s version %s; compare them with `status`", name, tagged)


def _put_back(client: MlflowClient, name: str, version: str, before: dict[str, str], keys: list[str]) -> None:
    """The tags `keys` of `version` as they were in `before` (deleted where they did not exist)."""
    current = client.get_model_version(name, version).tags
    for key in keys:
        if key in before:
            if current.get(key) != before[key]:
                client.set_model_version_tag(name, version, key, before[key])
        elif key in current:
            client.delete_model_version_tag(name, version, key)


def _sync_history(client: MlflowClient, name: str, alias: str) -> tuple[HistoryEntry, ...]:
    """The alias's history, written to the registered model's tag once it agrees with the alias's holder."""
    key = f"alias_history.{alias}"
    chain: tuple[HistoryEntry, ...] = ()
    try:
        for _ in range(SYNC_ATTEMPTS):
            chain = _chain(client, name, alias)
            client.set_registered_model_tag(name, key, json.dumps([asdict(entry) for entry in chain]))
            # A concurrent promotion may have moved the alias since the chain was read; then write again.
            if _chain(client, name, alias) == chain:
                return chain
        log.warning("%s@%s kept moving; its %s tag may lag (the version tags are authoritative)", name, alias, key)
    except MlflowException as exc:
        # The alias has moved already; the tag is derived and is rebuilt on the next promotion or rollback.
        log.warning("The alias moved but the %s tag of %s was not updated: %s", key, name, one_line(exc))
    return chain


def _announce(client: MlflowClient, name: str, alias: str, version: str) -> str:
    """The key of a new `promotion_pending` tag saying this process is promoting `version` to `alias`."""
    key = f"{PENDING_PREFIX}.{alias}.{uuid.uuid4().hex}"
    _mark(client, name, key, version, CHECKING)
    return key


def _mark(client: MlflowClient, name: str, key: str, version: str, state: str, previous: str | None = None) -> None:
    value = {"version": version, "state": state, "previous": previous, "since": time.time(), "by": _user()}
    client.set_registered_model_tag(name, key, json.dumps(value))


def _rivals(model: RegisteredModel, alias: str, own: str | None) -> dict[str, dict]:
    """Other announced promotions of `alias`: version -> {state, previous (the holder it replaces, or None)}."""
    rivals: dict[str, dict] = {}
    for key, value in model.tags.items():
        if not key.startswith(f"{PENDING_PREFIX}.{alias}.") or key == own:
            continue
        try:
            intent = json.loads(value)
            stale = time.time() - float(intent["since"]) > STALE_AFTER
        except (ValueError, KeyError, TypeError):
            continue  # not ours to interpret
        if not stale:
            rivals[str(intent["version"])] = intent
    return rivals


def _settle(client: MlflowClient, name: str, alias: str, own: str | None) -> tuple[str | None, dict[str, dict]]:
    """The alias's holder once no overlapping promotion is still before its write, and those promotions."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        model = client.get_registered_model(name)
        rivals = _rivals(model, alias, own)
        seen.update(rivals)
        checking = sorted(v for v, intent in rivals.items() if intent.get("state") == CHECKING)
        if not checking:
            return _alias_version(model, alias), seen
        if time.monotonic() > deadline:
            log.warning(
                "Promotions of %s to %s@%s are still running after %.0f s; reporting the holder as of now",
                ", ".join(checking), name, alias, SETTLE_TIMEOUT,
            )
            return _alias_version(model, alias), seen
        time.sleep(SETTLE_POLL)


def _await_losers(client: MlflowClient, name: str, alias: str, own: str | None, version: str) -> None:
    """Wait until the rivals that lost have put their versions' tags back, so the history read next is final."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while any(
        v != version and intent.get("state") != WON
        for v, intent in _rivals(client.get_registered_model(name), alias, own).items()
    ):
        if time.monotonic() > deadline:
            log.warning("Overlapping promotions of %s@%s are slow to finish; its history tag may lag", name, alias)
            return
        time.sleep(SETTLE_POLL)


def _skip(previous: str, rivals: dict[str, dict]) -> str:
    """`previous`, or if it is a rival's version (whose promotion lost), the holder that rival replaced."""
    seen: set[str] = set()
    while rivals.get(previous, {}).get("previous") is not None and previous not in seen:
        seen.add(previous)
        previous = rivals[previous]["previous"]
    return previous


def _chain(client: MlflowClient, name: str, alias: str) -> tuple[HistoryEntry, ...]:
    """The alias's holders, newest first, following each one's previous_version tag as rollback does."""
    version = _alias_version(client.get_registered_model(name), alias)
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
        recorded = {field: tags.get(_key(alias, field), "") for field in HISTORY_FIELDS}
        entries.append(HistoryEntry(version=version, **recorded))
        version = recorded["previous_version"]
    return tuple(entries)


# ---------------------------------------------------------------------------------------------------------
# Lookups that turn the store's errors into ones naming the fix


def _registered_model(client: MlflowClient, name: str) -> RegisteredModel:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == INVALID:
            raise UserError(f"{one_line(exc)}: pass a registered model name such as sentiment-english.") from None
        if exc.error_code != NOT_FOUND:
            raise
    known = [model.name for model in client.search_registered_models(max_results=20)]
    raise UserError(
        f"Registered model {name!r} does not exist in {redact_uri(mlflow.get_tracking_uri())}. Models there: {', '.join(known) or 'none'}. "
        f"Check the name, or point MLFLOW_TRACKING_URI at the store that has it."
    )


def _version(client: MlflowClient, name: str, version: str | None) -> ModelVersion:
    if not str(version).isdigit():
        raise UserError(f"A version is a number like 3, got {version!r}. See `sentiment-flow status {name}`.")
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code != NOT_FOUND:
            raise
    versions = sorted(int(mv.version) for mv in _all_versions(client, name))
    raise UserError(
        f"Version {version} of {name!r} does not exist; its versions are {', '.join(map(str, versions)) or 'none'}. "
        f"See `sentiment-flow status {name}`."
    )


def _check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise UserError(f"Unknown alias {alias!r}. Use one of: {', '.join(ALIASES)}.")


def _alias_version(model: RegisteredModel, alias: str) -> str | None:
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def _all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    versions, token = [], None
    while True:
        page = client.search_model_versions(_name_filter(name), page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def _name_filter(name: str) -> str:
    """The search filter for one model's versions. MLflow's filter strings have no escape character; a name
    holding a single quote (it's) is quoted with double quotes instead."""
    quote = '"' if "'" in name else "'"
    return f"name = {quote}{name}{quote}"


def _key(alias: str, field: str) -> str:
    return f"promotion.{alias}.{field}"


def _keys(alias: str, fields: dict[str, str]) -> dict[str, str]:
    return {_key(alias, field): value for field, value in fields.items()}


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _user() -> str:
    """The OS login of whoever runs the command (never a token or a tracking credential)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry
        return "unknown"


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _number(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key.removeprefix('test_')}={value:.4f}" for key, value in metrics.items()) or "none"


def _short(exc: BaseException) -> str:
    text = one_line(exc)
    return text if len(text) <= 300 else text[:297] + "..."
