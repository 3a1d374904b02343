"""Two-person approval of protected aliases (`promote` asks, `approve` moves).

On a real team server (`--auth`, PostgreSQL; the `team` fixture of test_server.py, one server for this module):
an ops user's promotion to champion becomes a pending request, the requester cannot approve it, a user holding
MANAGE on the model can, and a request whose alias moved meanwhile, or whose evaluation data changed, is refused.
Without a server (sqlite) the request and permission logic is tested on its own, and `approve` has nothing to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel, RegisteredModelAlias, RegisteredModelTag

from sentiment_flow.config import PromotionConfig
from sentiment_flow.errors import UserError
from sentiment_flow.registry import approvals, identity
from sentiment_flow.registry.audit import AUDIT_VALUE_LIMIT, REASON_LIMIT, trail

from conftest import REPO_ROOT, synthetic_split
from test_server import ADMIN, PASSWORD, log_in, run_cli, team  # noqa: F401 - team: the fixture

REQUESTER, APPROVER, BYSTANDER = "ana", "ben", "cy"  # roles (`add-user --role`): ops, approver, ops
PASSWORDS = {user: f"{user}-{uuid.uuid4().hex}" for user in (REQUESTER, APPROVER, BYSTANDER)}


# ---------------------------------------------------------------------------------------------------------
# Without a server


def request_for(version: str = "2", holder: str = "1", **changes) -> approvals.ApprovalRequest:
    request = approvals.new_request(version, "champion", REQUESTER, holder, "ready=pass", PromotionConfig())
    return approvals.ApprovalRequest(**{**request.__dict__, **changes})


def model_with(tags: dict[str, str], aliases: dict[str, str]) -> RegisteredModel:
    return RegisteredModel(
        "m",
        tags=[RegisteredModelTag(k, v) for k, v in tags.items()],
        aliases=[RegisteredModelAlias(a, v) for a, v in aliases.items()],
    )


def test_a_request_is_stale_once_its_alias_holder_changed_and_not_before():
    request = request_for(holder="1")
    assert not request.stale(model_with({}, {"champion": "1", "challenger": "5"}))
    assert request.stale(model_with({}, {"champion": "3"}))
    assert request.stale(model_with({}, {}))  # the champion was removed
    assert not request_for(holder=None).stale(model_with({}, {"challenger": "1"}))  # there was none, there is none


def test_the_open_request_is_the_newest_for_that_version_and_alias_and_unreadable_tags_are_skipped():
    old = request_for(requested_at="2026-01-01T00:00:00.000000Z", requested_by="x")
    new = request_for(requested_at="2026-01-02T00:00:00.000000Z", requested_by="y")
    other = request_for(version="3", requested_at="2026-01-03T00:00:00.000000Z")
    tags = {
        "approval.champion.2.a": approvals.encode(old),
        "approval.champion.2.b": approvals.encode(new),
        "approval.champion.3.c": approvals.encode(other),
        "approval.champion.2.d": "not json",
        "audit.champion.x": "{}",
    }
    model = model_with(tags, {"champion": "1"})
    assert [r.key for r in approvals.pending(model)] == [
        "approval.champion.3.c",
        "approval.champion.2.b",
        "approval.champion.2.a",
    ]
    found = approvals.open_request(model, "2", "champion")
    assert found.requested_by == "y" and found.key == "approval.champion.2.b" and found == new
    assert approvals.open_request(model, "2", "challenger") is None
    assert found.promotion_config() == PromotionConfig()


def test_a_request_that_cannot_fit_a_tag_is_refused_before_anything_is_written():
    request = request_for(data_path="/d/" + "x" * (AUDIT_VALUE_LIMIT - REASON_LIMIT), reason="r" * REASON_LIMIT)
    with pytest.raises(UserError, match=f"at most {AUDIT_VALUE_LIMIT}.*Shorten --reason"):
        approvals.encode(request)
    assert len(approvals.encode(request_for(reason="r" * REASON_LIMIT))) <= AUDIT_VALUE_LIMIT


def test_a_new_request_replaces_the_requesters_earlier_one_and_keeps_everyone_elses():
    client = MlflowClient()  # the test's sqlite store
    client.create_registered_model("m")
    mine = approvals.write(client, "m", request_for())
    theirs = approvals.write(client, "m", request_for(requested_by="someone-else"))
    again = approvals.write(client, "m", request_for())
    keys = {r.key for r in approvals.pending(client.get_registered_model("m"))}
    assert keys == {theirs.key, again.key} and mine.key not in keys
    assert json.loads(client.get_registered_model("m").tags[again.key])["requested_by"] == REQUESTER


def reply(*grants: tuple[str, str, str], admin: bool = False) -> dict:
    """CURRENT_PERMISSIONS's answer holding `grants` of (resource type, pattern, permission), each from a role."""
    rows = [
        {"resource_type": kind, "resource_pattern": pattern, "permission": permission, "role_id": 1,
         "role_name": "r", "workspace": "default"}
        for kind, pattern, permission in grants
    ]  # fmt: skip
    return {"is_admin": admin, "permissions": rows}


MODEL = "registered_model"


@pytest.mark.parametrize(
    "found, expected",
    [
        (reply(admin=True), True),
        (reply(), False),
        (reply((MODEL, "*", "EDIT")), False),
        (reply((MODEL, "*", "EDIT"), (MODEL, "m", "MANAGE")), True),
        (reply((MODEL, "other", "MANAGE")), False),
        (reply(("experiment", "m", "MANAGE")), False),
        (reply((MODEL, "*", "MANAGE"), (MODEL, "m", "DENY")), False),
        (reply(("workspace", "*", "MANAGE")), True),
    ],
    ids=["admin", "nothing", "edit", "direct-manage", "other-model", "experiment", "deny-vetoes", "workspace-admin"],
)
def test_manage_on_a_model_is_read_from_the_grants_as_mlflow_folds_them(found, expected):
    assert identity.manages(found, "m") is expected


def test_a_local_store_has_no_identity_and_approve_says_it_needs_a_team_server(monkeypatch):
    assert identity.current() is None  # sqlite: no request is made
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: asking would fail
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    assert identity.current() is None  # no username: the server would not know who asks
    code, output = run_cli("approve", "m", "--version", "1", "--alias", "champion")
    assert code == 2 and "team server with --auth" in output and "MLFLOW_TRACKING_USERNAME" in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_the_approve_script_answers_help_with_the_commands_options():
    script = REPO_ROOT / "registry_scripts" / "approve.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: approve.py [OPTIONS] NAME") and "--reason" in result.stdout


# ---------------------------------------------------------------------------------------------------------
# On the team server


def as_user(monkeypatch, team, username: str) -> None:  # noqa: F811 - team: the fixture's value
    log_in(monkeypatch, team, username, PASSWORD if username == ADMIN else PASSWORDS[username])


@pytest.fixture(scope="module")
def logged_model(team, tiny_model_dir):  # noqa: F811 - the imported fixture
    """The tiny model logged once on the server (by the admin), and the users REQUESTER, APPROVER, BYSTANDER."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sentiment_flow.server import users
    from sentiment_flow.training import tracking

    with pytest.MonkeyPatch.context() as mp:
        log_in(mp, team, ADMIN, PASSWORD)
        for user in PASSWORDS:
            mp.setenv(users.NEW_PASSWORD_VAR, PASSWORDS[user])
            code, output = run_cli("add-user", user, "--role", "approver" if user == APPROVER else "ops")
            assert code == 0, output
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        with mlflow.start_run():
            return tracking.log_model(model, tokenizer, None)


@pytest.fixture
def governed_model(team, logged_model, monkeypatch):  # noqa: F811 - the imported fixture
    """Factory: a registered model of the admin's with versions of these test F1s, version 1 the champion
    (promoted by the admin); APPROVER holds MANAGE on it by its role. The test's client is the admin."""

    def create(*f1s: float) -> str:
        as_user(monkeypatch, team, ADMIN)
        client = MlflowClient()
        name = f"governed-{uuid.uuid4().hex[:8]}"
        client.create_registered_model(name)
        for f1 in f1s:
            with mlflow.start_run() as run:
                mlflow.log_metrics({"test_f1_macro": f1, "test_accuracy": f1})
            tags = {"lang": "english", "data_hash": "d" * 64, "mlflow_run_id": run.info.run_id}
            client.create_model_version(
                name, logged_model.model_uri, run.info.run_id, tags=tags, model_id=logged_model.model_id
            )
        code, output = run_cli("promote", name, "--version", "1", "--alias", "champion")
        assert code == 0 and "now points at version 1" in output, output
        return name

    return create


def champion(name: str) -> str | None:
    return MlflowClient().get_registered_model(name).aliases.get("champion")


def approval_tags(name: str) -> dict[str, dict]:
    tags = MlflowClient().get_registered_model(name).tags
    return {key: json.loads(value) for key, value in tags.items() if key.startswith("approval.")}


@pytest.mark.slow
def test_an_ops_users_promotion_waits_for_another_users_approval_which_records_both(
    team,  # noqa: F811 - the imported fixture
    governed_model,
    monkeypatch,
):
    name = governed_model(0.7, 0.8)

    as_user(monkeypatch, team, REQUESTER)
    assert identity.current() == identity.Identity(REQUESTER, False) and not identity.holds_manage(name)
    code, output = run_cli("promote", name, "--version", "2", "--alias", "champion", "--dry-run")
    assert code == 0 and "an approval of moving" in output and approval_tags(name) == {}, output
    code, output = run_cli("promote", name, "--version", "2", "--alias", "champion", "--reason", "better F1")
    assert code == 0 and "Approval requested" in output, output
    assert f"sentiment-flow approve {name} --version 2 --alias champion" in output, output
    assert champion(name) == "1", output
    (request,) = approval_tags(name).values()
    assert (request["requested_by"], request["version"], request["alias"], request["holder"]) == (
        REQUESTER,
        "2",
        "champion",
        "1",
    )
    assert "smoke_test=pass" in request["gates"] and request["reason"] == "better F1"
    assert request["config"] == json.loads(json.dumps(PromotionConfig().__dict__))
    code, output = run_cli("status", name)
    assert code == 0 and f"v2 -> @champion  requested by {REQUESTER}" in output and "(open;" in output, output
    assert f"promote champion v1 -> v2: approval requested; requested by {REQUESTER}; reason: better F1" in output

    # The requester, and a user without MANAGE, are refused; the alias stays and each refusal is recorded.
    code, output = run_cli("approve", name, "--version", "2", "--alias", "champion")
    assert code == 1 and "can never approve their own request" in output and champion(name) == "1", output
    as_user(monkeypatch, team, BYSTANDER)
    code, output = run_cli("approve", name, "--version", "2", "--alias", "champion")
    assert code == 1 and f"User '{BYSTANDER}' lacks MANAGE permission on registered model '{name}'" in output
    assert champion(name) == "1" and len(approval_tags(name)) == 1

    # An unprotected alias moves for an ops user at once.
    as_user(monkeypatch, team, REQUESTER)
    code, output = run_cli("promote", name, "--version", "2", "--alias", "challenger")
    assert code == 0 and "now points at version 2" in output, output

    as_user(monkeypatch, team, APPROVER)
    assert identity.holds_manage(name)
    code, output = run_cli("approve", name, "--version", "2", "--alias", "champion", "--reason", "checked")
    assert code == 0 and "now points at version 2 (before: version 1)" in output, output
    assert champion(name) == "2" and approval_tags(name) == {}
    model = MlflowClient().get_registered_model(name)
    records = trail(model)
    done = records[0]
    assert (done.outcome, done.requested_by, done.approved_by, done.reason, done.approval_reason) == (
        "done",
        REQUESTER,
        APPROVER,
        "better F1",
        "checked",
    )
    refused = [r for r in records if r.outcome == "refused"]
    assert [r.note.split(" ")[0:2] for r in refused] == [["User", f"'{BYSTANDER}'"], [REQUESTER, "requested"]]
    code, output = run_cli("status", name)
    assert code == 0 and f"v1 -> v2: done; requested by {REQUESTER}; approver {APPROVER}" in output, output
    assert "Pending approval requests" not in output


@pytest.mark.slow
def test_a_request_goes_stale_when_the_champion_moves_and_approving_it_is_refused(
    team,  # noqa: F811 - the imported fixture
    governed_model,
    monkeypatch,
):
    name = governed_model(0.7, 0.8, 0.75)
    as_user(monkeypatch, team, REQUESTER)
    assert run_cli("promote", name, "--version", "2", "--alias", "champion")[0] == 0
    as_user(monkeypatch, team, ADMIN)  # the admin moves it meanwhile (admins need no approval)
    code, output = run_cli("promote", name, "--version", "3", "--alias", "champion")
    assert code == 0 and champion(name) == "3", output
    code, output = run_cli("status", name)
    assert f"(stale: {name}@champion moved since;" in output, output

    as_user(monkeypatch, team, APPROVER)
    code, output = run_cli("approve", name, "--version", "2", "--alias", "champion")
    assert code == 1 and "The request is stale" in output and "points at version 3 now" in output, output
    assert champion(name) == "3"
    code, output = run_cli("approve", name, "--version", "3", "--alias", "champion")
    assert code == 1 and "No pending approval request" in output and "v2 -> @champion" in output, output


@pytest.mark.slow
def test_approving_after_the_evaluation_data_changed_is_refused(
    team,  # noqa: F811 - the imported fixture
    governed_model,
    monkeypatch,
    tmp_path,
):
    name = governed_model(0.7, 0.8)
    data = tmp_path / "eval.csv"
    synthetic_split(30, seed=3).to_csv(data, index=False)
    as_user(monkeypatch, team, REQUESTER)
    code, output = run_cli(
        "promote",
        name,
        "--version",
        "2",
        "--alias",
        "champion",
        "--eval-data",
        str(data),
        "--min-f1-macro",
        "0",
        "--tolerance",
        "1",
        "--per-class-tolerance",
        "1",
    )
    assert code == 0 and "Approval requested" in output, output
    (request,) = approval_tags(name).values()
    assert request["data_path"] == str(data) and request["data_digest"] and len(request["evaluation_runs"]) == 2
    assert request["config"]["eval_data"] == str(data) and request["config"]["tolerance"] == 1

    pd.concat([pd.read_csv(data)] * 2).to_csv(data, index=False)  # the same rows twice: another data set
    as_user(monkeypatch, team, APPROVER)
    code, output = run_cli("approve", name, "--version", "2", "--alias", "champion")
    assert code == 1 and "The evaluation data changed since the request" in output, output
    assert champion(name) == "1" and len(approval_tags(name)) == 1


@pytest.mark.slow
def test_a_gate_that_fails_at_approval_refuses_it_and_keeps_the_request(
    team,  # noqa: F811 - the imported fixture
    governed_model,
    monkeypatch,
):
    name = governed_model(0.7, 0.8)
    as_user(monkeypatch, team, REQUESTER)
    assert run_cli("promote", name, "--version", "2", "--alias", "champion")[0] == 0
    as_user(monkeypatch, team, ADMIN)  # meanwhile the candidate's training is found broken and marked failed
    client = MlflowClient()
    client.set_terminated(client.get_model_version(name, "2").run_id, "FAILED")

    as_user(monkeypatch, team, APPROVER)
    code, output = run_cli("approve", name, "--version", "2", "--alias", "champion")
    assert code == 1 and "Refused by ready" in output and champion(name) == "1", output
    refused = trail(client.get_registered_model(name))[0]
    assert (refused.outcome, refused.requested_by, refused.approved_by) == ("refused", REQUESTER, APPROVER)
    assert len(approval_tags(name)) == 1
