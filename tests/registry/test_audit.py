"""The append-only audit trail, rollback inside the concurrency protocol, and announcements of dead processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from sentiment_flow import registry
from sentiment_flow.cli import cli
from sentiment_flow.errors import UserError
from sentiment_flow.registry import audit, pending
from sentiment_flow.registry.rows import Gate

import test_registry
from conftest import subprocess_env
from test_registry import NAME, aliases, history_tag, registry_state

add_version = test_registry.add_version  # the fixture: a new version whose own run has these test metrics


def records(**match: str) -> list[registry.AuditRecord]:
    """The model's audit records, newest first, whose fields equal `match`."""
    return [r for r in registry.status(NAME).audit if all(getattr(r, k) == v for k, v in match.items())]


def pending_tags() -> list[str]:
    return [key for key in MlflowClient().get_registered_model(NAME).tags if key.startswith(pending.PENDING_PREFIX)]


class FakeClock:
    """pending's `time`: sleeping advances the clock at once, and every sleep is counted."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.sleeps = 0

    def time(self) -> float:
        return time.time() + self.elapsed

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.elapsed += seconds


# ---------------------------------------------------------------------------------------------------------
# Append-only records


def test_every_rollback_stays_in_the_audit_trail_and_re_promoting_one_needs_despite_rollback(add_version):
    versions = [add_version(0.7 + i / 100) for i in range(5)]
    for version in versions:
        registry.promote(NAME, version, "champion")
    for i in range(4):
        registry.rollback(NAME, reason=f"bad outputs in prod #{i}")
    assert aliases() == {"champion": versions[0]}

    with pytest.raises(registry.Refused, match=f"Version {versions[4]} was rolled back .*#0.*--despite-rollback"):
        registry.promote(NAME, versions[4], "champion")
    report = registry.promote(NAME, versions[4], "champion", despite_rollback=True, reason="root cause fixed")

    assert report.promoted and aliases() == {"champion": versions[4]}
    rollbacks = records(event="rollback", outcome="done")
    assert [r.reason for r in rollbacks] == [f"bad outputs in prod #{i}" for i in (3, 2, 1, 0)]
    assert [(r.from_version, r.to_version) for r in rollbacks] == [
        (versions[4 - j], versions[3 - j]) for j in (3, 2, 1, 0)
    ]
    (refused,) = records(event="promote", outcome="refused")
    assert refused.to_version == versions[4] and "#0" in refused.note
    latest = registry.status(NAME).audit[0]
    assert (latest.outcome, latest.to_version, latest.reason) == ("done", versions[4], "root cause fixed")
    assert "bad outputs in prod #0" in latest.despite_rollback and latest.by
    assert len(records(event="promote", outcome="done")) == 6


def test_refusals_and_forced_promotions_are_recorded_with_their_gate_summary(add_version):
    v1, v2, v3 = add_version(0.7), add_version(0.6), add_version(0.5)
    registry.promote(NAME, v1, "champion")

    refused = registry.promote(NAME, v2, "champion")
    forced = registry.promote(NAME, v3, "champion", force=True, reason="hotfix for ticket 123")

    assert refused.exit_code == 1 and forced.promoted
    newest, refusal, first = registry.status(NAME).audit
    assert (newest.outcome, newest.forced, newest.reason, newest.from_version) == (
        "done",
        True,
        "hotfix for ticket 123",
        v1,
    )
    assert "no_regression=forced" in newest.gates and "smoke_test=pass" in newest.gates
    assert (refusal.outcome, refusal.to_version, refusal.note) == ("refused", v2, "refused by no_regression")
    assert "no_regression=fail" in refusal.gates
    assert (first.outcome, first.from_version, first.to_version) == ("done", "", v1)


def test_a_refused_rollback_is_recorded_and_moves_nothing(add_version):
    v1 = add_version(0.7)
    registry.promote(NAME, v1, "champion")
    before = registry_state(records=False)

    with pytest.raises(registry.Refused, match="has no previous holder recorded"):
        registry.rollback(NAME, reason="looks wrong")

    assert registry_state(records=False) == before
    refused = registry.status(NAME).audit[0]
    assert (refused.event, refused.outcome, refused.from_version, refused.to_version) == ("rollback", "refused", v1, "")
    assert refused.reason == "looks wrong" and "has no previous holder recorded" in refused.note


def test_dry_runs_and_no_ops_write_no_record(add_version):
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    before = registry_state()

    registry.promote(NAME, v2, "champion", dry_run=True)
    registry.promote(NAME, v1, "champion")

    assert registry_state() == before


def test_a_refusal_whose_record_cannot_be_written_is_still_a_refusal(add_version, monkeypatch):
    # As for a user who may only read on a server with --auth: the store answers 403 to the audit tag.
    v1, v2 = add_version(0.7), add_version(0.6)
    registry.promote(NAME, v1, "champion")
    write_tag = MlflowClient.set_registered_model_tag

    def read_only(self, name, key, value):
        if key.startswith("audit."):
            raise MlflowException("Permission denied", error_code="PERMISSION_DENIED")
        return write_tag(self, name, key, value)

    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", read_only)
    report = registry.promote(NAME, v2, "champion")

    assert (report.failed, report.exit_code) == (("no_regression",), 1)
    assert aliases() == {"champion": v1} and len(records()) == 1  # only the first promotion's


def test_an_audit_record_with_twenty_gates_and_the_longest_reason_fits_a_registered_model_tag():
    gates = tuple(
        Gate(f"gate_number_{i:02d}_with_a_long_name", "0.1", "0.2", ">= 0.3", "forced", "x" * 300) for i in range(20)
    )
    summary = " ".join(f"{g.gate}={g.outcome}" for g in gates)
    reason = "\U0001f600" * audit.REASON_LIMIT  # PostgreSQL's VARCHAR counts characters, not bytes
    record = audit.new_record(
        audit.PROMOTE,
        audit.REFUSED,
        "champion",
        "12",
        "13",
        reason=reason,
        forced=True,
        despite_rollback=f"2026-12-06T12:00:00.000000Z by someone ({reason})",
        gates=summary,
        note="n" * 5000,
    )

    text = audit.encode(record)

    assert len(text) <= audit.AUDIT_VALUE_LIMIT
    assert (
        json.loads(text)["reason"] == reason and "gate_number_19_with_a_long_name=forced" in json.loads(text)["gates"]
    )


def test_a_reason_too_long_for_the_audit_record_is_refused_before_anything_is_written(add_version):
    v1 = add_version(0.7)
    before = registry_state()

    with pytest.raises(UserError, match=f"--reason is {audit.REASON_LIMIT + 1} characters; at most"):
        registry.promote(NAME, v1, "champion", reason="x" * (audit.REASON_LIMIT + 1))

    assert registry_state() == before


def test_cli_refuses_a_rolled_back_version_in_one_line_and_status_shows_the_audit_trail(add_version, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    registry.promote(NAME, v2, "champion")
    runner = CliRunner()

    rolled = runner.invoke(cli, ["rollback", NAME, "--reason", "bad outputs in prod"])
    refused = runner.invoke(cli, ["promote", NAME, "--version", v2, "--alias", "champion"])
    acknowledged = runner.invoke(cli, ["promote", NAME, "--version", v2, "--alias", "champion", "--despite-rollback"])
    status = runner.invoke(cli, ["status", NAME])

    assert rolled.exit_code == 0 and f"rolled back from version {v2} to {v1}" in rolled.output
    error = refused.output.strip()
    assert refused.exit_code == 1 and "\n" not in error and "Traceback" not in error
    assert f"Version {v2} was rolled back from {NAME}@champion at " in error
    assert "(bad outputs in prod). To promote it again anyway add --despite-rollback" in error
    assert acknowledged.exit_code == 0, acknowledged.output
    lines = status.output.splitlines()
    trail = lines[lines.index("Audit trail (newest first):") + 1 :]
    assert [line.split("  ")[-1].split(":")[0] for line in trail] == [
        f"promote champion v{v1} -> v{v2}",
        f"promote champion v{v1} -> v{v2}",
        f"rollback champion v{v2} -> v{v1}",
        f"promote champion v{v1} -> v{v2}",
        f"promote champion v- -> v{v1}",
    ]
    assert "despite the rollback of" in trail[0] and "refused" in trail[1] and "bad outputs in prod" in trail[2]


# ---------------------------------------------------------------------------------------------------------
# Rollback in the concurrency protocol

# A promotion (argv: "promote VERSION") and a rollback ("rollback") of NAME@champion, in two processes.
# "between": the rollback runs after the promotion moved the alias and before it reads the holder back (the
# race from the issue, where the promotion's tag restore deleted the rollback's record). "together": both
# wait at `set_registered_model_alias` until both are there, so they move the alias at the same moment.
RACER = """
import pathlib, sys, time
from mlflow import MlflowClient
from sentiment_flow import registry
from sentiment_flow.registry import pending

barrier, mode, name, command = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
set_alias, settle = MlflowClient.set_registered_model_alias, pending.settle

def wait_for(*names):
    deadline = time.monotonic() + 120
    while not all((barrier / n).exists() for n in names) and time.monotonic() < deadline:
        time.sleep(0.005)

def alias_then_signal(self, *args, **kwargs):
    (barrier / command).touch()
    if mode == "together":
        wait_for("promote", "rollback")
    result = set_alias(self, *args, **kwargs)
    (barrier / f"{command}-wrote").touch()
    return result

def settle_after_the_rollback(*args, **kwargs):
    wait_for("rollback-wrote")
    return settle(*args, **kwargs)

MlflowClient.set_registered_model_alias = alias_then_signal
if command == "promote":
    if mode == "between":
        pending.settle = settle_after_the_rollback
    sys.exit(registry.promote(name, sys.argv[5], "champion", reason="racing").exit_code)
if mode == "between":
    wait_for("promote-wrote")
sys.exit(registry.rollback(name, reason="bad outputs in prod").exit_code)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["between", "together"])
def test_a_rollback_racing_a_promotion_leaves_one_holder_and_both_audit_records(add_version, tmp_path, mode):
    v1, v2, v3 = add_version(0.7), add_version(0.8), add_version(0.9)
    registry.promote(NAME, v1, "champion")
    registry.promote(NAME, v2, "champion")
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    racers = {
        command: subprocess.Popen(
            [sys.executable, "-c", RACER, str(barrier), mode, NAME, command, *extra],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command, extra in (("promote", [v3]), ("rollback", []))
    }
    codes = {command: (racer.wait(timeout=240), racer.stdout.read()) for command, racer in racers.items()}

    holder = aliases()["champion"]
    (promoted,) = records(event="promote", reason="racing")
    (rolled,) = records(event="rollback")
    assert rolled.reason == "bad outputs in prod"
    # The rollback went back from whatever held the alias when it read it; the winner's target holds it.
    winner = "promote" if holder == v3 else "rollback"
    assert holder == (v3 if winner == "promote" else rolled.to_version), codes
    assert {command: code for command, (code, _) in codes.items()} == {
        "promote": 0 if winner == "promote" else 1,
        "rollback": 0 if winner == "rollback" else 1,
    }, codes
    assert (promoted.outcome, rolled.outcome) == (
        ("done", "superseded") if winner == "promote" else ("superseded", "done")
    )
    assert history_tag()[0] == holder == registry.status(NAME).histories["champion"][0].version
    assert not pending_tags()
    if mode == "between":  # the rollback read the promotion's holder: it undid it, and the promotion says so
        assert (rolled.from_version, rolled.to_version, holder) == (v3, v2, v2)
        assert promoted.outcome == "superseded" and f"v{v2} holds the alias" in promoted.note


# ---------------------------------------------------------------------------------------------------------
# Announcements of processes that are gone; one deadline for all waiting

ANNOUNCER = """
import sys, time
from mlflow import MlflowClient
from sentiment_flow.registry import pending

pending.announce(MlflowClient(), sys.argv[1], "champion", sys.argv[2])
print("announced", flush=True)
time.sleep(600)
"""


@pytest.mark.slow  # a promotion in a subprocess, killed
def test_an_announcement_left_by_a_killed_promotion_is_stale_at_once(add_version, monkeypatch):
    v1, v2, v3 = add_version(0.7), add_version(0.8), add_version(0.9)
    registry.promote(NAME, v1, "champion")
    killed = subprocess.Popen(
        [sys.executable, "-c", ANNOUNCER, NAME, v3], env=subprocess_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert killed.stdout.readline().strip() == "announced"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    assert len(pending_tags()) == 1  # what the killed promotion left behind
    clock = FakeClock()
    monkeypatch.setattr(pending, "time", clock)

    report = registry.promote(NAME, v2, "champion")

    assert report.promoted and aliases() == {"champion": v2}
    assert clock.sleeps == 0  # no poll waited for the dead process
    assert version_previous(v2) == v1


def version_previous(version: str) -> str:
    return MlflowClient().get_model_version(NAME, version).tags["promotion.champion.previous_version"]


def test_only_a_dead_process_on_this_host_makes_an_announcement_stale(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    alive = {"host": socket.gethostname(), "pid": child.pid, "started": pending.started(child.pid)}
    try:
        assert not pending.gone(alive)
        assert not pending.gone({**alive, "host": "another-host"})  # its pid means nothing here
        assert pending.gone({**alive, "started": "1"})  # the pid was reused by a later process
        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pending.started(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pending.gone(alive)  # a zombie, not yet reaped by its parent, runs nothing
    finally:
        child.kill()
        child.wait(timeout=30)
    assert pending.gone(alive)  # reaped: the pid does not exist
    assert not pending.gone({"host": alive["host"], "pid": os.getpid(), "started": pending.started(os.getpid())})


def test_a_promotion_waits_at_most_the_settle_timeout_in_all_for_a_rival_that_never_finishes(add_version, monkeypatch):
    v1, v2, v3 = add_version(0.7), add_version(0.8), add_version(0.9)
    registry.promote(NAME, v1, "champion")
    clock = FakeClock()
    monkeypatch.setattr(pending, "time", clock)
    # A live rival (this very process) that announced and never writes: settle and await_losers both wait on it.
    rival = pending.announce(MlflowClient(), NAME, "champion", v3)

    report = registry.promote(NAME, v2, "champion")

    assert report.promoted and aliases() == {"champion": v2}
    assert pending.SETTLE_TIMEOUT <= clock.elapsed <= pending.SETTLE_TIMEOUT + pending.SETTLE_POLL
    assert pending_tags() == [rival]
