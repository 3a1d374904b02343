"""What the registry commands return: results the CLI renders, and the sentences it prints with them."""

from __future__ import annotations

from dataclasses import dataclass

from sentiment_flow.registry.approvals import ApprovalRequest
from sentiment_flow.registry.audit import AuditRecord, HistoryEntry
from sentiment_flow.registry.rows import FAIL, FORCEABLE, Gate
from sentiment_flow.store import models_uri


@dataclass(frozen=True)
class Approval:
    """Who asked for a promotion of a protected alias and who approved it (the server's authenticated users)."""

    requested_by: str
    approved_by: str
    approval_reason: str = ""  # the approver's --reason


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
    held: bool = False  # every gate passed, but the alias is protected: it waits for an approval
    approval: Approval | None = None  # set when an approval runs this promotion
    request: ApprovalRequest | None = None  # the approval request written instead of moving the alias

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the gates that failed (forced ones do not count)."""
        return tuple(g.gate for g in self.gates if g.outcome == FAIL)

    @property
    def exit_code(self) -> int:
        """0 promoted, already held, approval requested, or a dry run that would pass; 1 refused or superseded."""
        done = self.promoted or self.already_held or self.request is not None
        return 0 if done or (self.dry_run and not self.failed) else 1

    @property
    def summary(self) -> str:
        """One sentence on the outcome, naming what to do next."""
        target = f"{self.name}@{self.alias}"
        before = f"version {self.previous}" if self.previous else "no version"
        if self.already_held:
            return f"{target} already points at version {self.version}: nothing to do."
        if self.superseded_by is not None:
            return superseded(
                "Not promoted: another promotion",
                "one",
                self.name,
                self.alias,
                self.version,
                self.superseded_by,
                f"promote again if version {self.version} should have it",
            )
        if self.dry_run and not self.failed and self.held:
            return (
                f"Dry run, nothing changed: every gate passes; without --dry-run an approval of moving {target} "
                f"from {before} to version {self.version} would be requested ({target} is protected)."
            )
        if self.dry_run and not self.failed:
            return (
                f"Dry run, nothing changed: every gate passes; without --dry-run {target} would move "
                f"from {before} to version {self.version}."
            )
        if self.dry_run:
            return f"Dry run, nothing changed: version {self.version} would be refused by {', '.join(self.failed)}."
        if self.request is not None:
            return (
                f"Approval requested: every gate passes, but {target} is protected and only a user with MANAGE on "
                f"{self.name} moves it; it still points at {before}. Ask one (not {self.request.requested_by}) to "
                f"run `sentiment-flow approve {self.name} --version {self.version} --alias {self.alias}`."
            )
        if self.promoted:
            return (
                f"{target} now points at version {self.version} (before: {before}); undo with "
                f"`sentiment-flow rollback {self.name} --alias {self.alias}`."
            )
        hint = ""
        if set(self.failed) <= set(FORCEABLE) and self.forced:  # then unmeasured: forcing again changes nothing
            hint = " --force overrides only a gate that was measured: see the note of each that failed."
        elif set(self.failed) <= set(FORCEABLE):
            hint = " To override these gates deliberately, add --force --reason TEXT (recorded on the version)."
        return f"Refused by {', '.join(self.failed)}: {target} still points at {before}.{hint}"


@dataclass(frozen=True)
class RollbackResult:
    """Where the alias pointed before and after, and its history after the rollback."""

    name: str
    alias: str
    from_version: str
    to_version: str
    history: tuple[HistoryEntry, ...]
    superseded_by: str | None = None  # where an overlapping promotion moved the alias after this rollback did

    @property
    def exit_code(self) -> int:
        """0 rolled back; 1 superseded by an overlapping promotion."""
        return 0 if self.superseded_by is None else 1

    @property
    def summary(self) -> str:
        """One sentence on the outcome, naming what to do next."""
        target = f"{self.name}@{self.alias}"
        if self.superseded_by is not None:
            return superseded(
                "Not rolled back: a promotion",
                "rollback",
                self.name,
                self.alias,
                self.to_version,
                self.superseded_by,
                "roll back again if needed",
            )
        return f"{target} rolled back from version {self.from_version} to {self.to_version}"


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
        return models_uri(self.name, self.version)


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
    audit: tuple[AuditRecord, ...] = ()  # every promotion, refusal and rollback, newest first
    requests: tuple[tuple[ApprovalRequest, bool], ...] = ()  # pending approval requests, newest first, and stale?


def superseded(outcome: str, this: str, name: str, alias: str, version: str, now: str, retry: str) -> str:
    """The sentence for an alias move that an overlapping promotion moved again: it stays where that one put it."""
    held = f"version {now}" if now else "no version"
    return (
        f"{outcome} running at the same time pointed {name}@{alias} at {held} after this {this} pointed it at "
        f"version {version}; it stays at {held}. Check `sentiment-flow status {name}` and {retry}."
    )
