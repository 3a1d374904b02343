"""The governance app of `sentiment-flow server --auth`, held to by raw REST calls (`requests`, no CLI).

Against a real server on pgserver's PostgreSQL (this module's own, like test_server.py's, protecting `production`
besides `champion`), with a user of each role: protected aliases, name creation, the audit and approval tag
rules, the published protected aliases. The identity and role checks that need no server come first.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from sentiment_flow import store
from sentiment_flow.config import GOVERNANCE_ENDPOINT
from sentiment_flow.registry import identity
from sentiment_flow.server import app as server
from sentiment_flow.server import refusals
from sentiment_flow.server import users as server_users

from conftest import free_port
from test_server import ADMIN, PASSWORD, Team, log_in, run_cli

MODEL = "gov-english"  # the admin's, champion -> 1
OPS, APPROVER, VIEWER, OWNER = "edith", "manny", "vera", "owen"  # owen: a viewer who owns one model
PASSWORDS = {user: f"{user}-{uuid.uuid4().hex}" for user in (OPS, APPROVER, VIEWER, OWNER)}
ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"


# ---------------------------------------------------------------------------------------------------------
# Without a server


def test_the_user_is_the_authenticated_tracking_username_on_a_server_and_the_os_login_elsewhere(monkeypatch):
    import getpass

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    mlflow.set_tracking_uri("http://mlflow.internal:5000")
    assert store.user() == "alice"
    mlflow.set_tracking_uri("sqlite:///mlflow.db")  # a local store: nothing authenticated the name
    assert store.user() == getpass.getuser()
    mlflow.set_tracking_uri("http://mlflow.internal:5000")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert store.user() == getpass.getuser()
    mlflow.set_tracking_uri("https://carol:secret-pw@mlflow.internal")  # credentials in the URI: its user
    assert store.user() == "carol"


def test_the_server_side_copies_of_the_tag_prefixes_and_the_int8_suffix_match_their_owners():
    from sentiment_flow.int8 import INT8_SUFFIX
    from sentiment_flow.registry.audit import AUDIT_PREFIX

    assert f"{AUDIT_PREFIX}." == server_users.AUDIT_TAG_PREFIX
    assert server_users.INT8_SUFFIX == INT8_SUFFIX


def test_the_approver_is_the_smallest_role_with_manage_and_ops_with_edit_on_models():
    assert server_users.ROLES["approver"].permissions == {
        server_users.EXPERIMENT: "EDIT",
        server_users.REGISTERED_MODEL: "MANAGE",
    }
    assert refusals._smallest_role(server_users.REGISTERED_MODEL, "MANAGE") == "approver"
    assert refusals._smallest_role(server_users.REGISTERED_MODEL, "EDIT") == "ops"
    assert refusals._smallest_role(server_users.EXPERIMENT, "EDIT") == "ops"  # not the approver, alike there


def test_protected_aliases_without_auth_or_with_a_bad_name_are_refused_and_start_nothing(tmp_path, monkeypatch):
    code, output = run_cli(
        "server", "--data-dir", str(tmp_path / "a"), "--port", str(free_port()), "--protected-alias", "x"
    )
    assert code == 2 and "--protected-alias needs --auth" in output and not (tmp_path / "a").exists(), output
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", PASSWORD)
    code, output = run_cli(
        "server", "--data-dir", str(tmp_path / "b"), "--port", str(free_port()), "--auth", "--protected-alias", "a,b"
    )
    assert code == 2 and "--protected-alias 'a,b' is not a valid alias" in output and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_too_short_admin_password_stops_the_start_in_one_line_before_any_worker(monkeypatch):
    root = Path(tempfile.mkdtemp(prefix="sf-gov-", dir="/tmp"))  # PostgreSQL's user must pass through, as root
    root.chmod(0o711)
    short = "short-pw"
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", short)
    port = free_port()
    try:
        code, output = run_cli("server", "--data-dir", str(root / "data"), "--port", str(port), "--auth")
        assert code == 2 and "The auth database could not be set up:" in output and "is invalid" in output, output
        assert len(output.strip().splitlines()) == 1 and short not in output
        with socket.socket() as probe:  # nothing kept listening
            probe.bind(("127.0.0.1", port))
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Against the running server


@pytest.fixture(scope="module")
def team():
    """A team server with --auth that protects `production` besides champion (`--protected-alias` twice); stopped
    (with its PostgreSQL) however the module ends."""
    root = Path(tempfile.mkdtemp(prefix="sf-gov-", dir="/tmp"))  # PostgreSQL's user must pass through, as root
    root.chmod(0o711)
    port = free_port()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(server.ADMIN_PASSWORD_VAR, PASSWORD)
            started = server.start(
                root / "data", port=port, workers=2, auth=True, protected_aliases=("champion", "production")
            )
        with started:
            yield Team(root, root / "data", port, started)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def governed(team):
    """The team server with a user of each role and MODEL (versions 1 and 2, champion -> 1), made by the admin."""
    with pytest.MonkeyPatch.context() as mp:
        log_in(mp, team, ADMIN, PASSWORD)
        for user, role in ((OPS, "ops"), (APPROVER, "approver"), (VIEWER, "viewer"), (OWNER, "viewer")):
            server_users.add_user(user, role, lambda user=user: PASSWORDS[user])
        client = MlflowClient()
        client.create_registered_model(MODEL)
        with mlflow.start_run() as run:
            mlflow.log_text("not a model", "model/README.txt")
        for _ in range(2):
            client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(MODEL, "champion", "1")
    return team


def call(server, user: str, method: str, path: str, **body) -> requests.Response:
    """A raw REST call to the server as `user`, its JSON parameters in the body."""
    password = PASSWORD if user == ADMIN else PASSWORDS[user]
    return requests.request(method, server.url + path, json=body, auth=(user, password), timeout=60)


def aliases(server, name: str = MODEL) -> dict[str, str]:
    reply = call(server, ADMIN, "GET", f"/api/2.0/mlflow/registered-models/get?name={name}")
    reply.raise_for_status()
    return {a["alias"]: a["version"] for a in reply.json()["registered_model"].get("aliases", [])}


def tags(server, name: str = MODEL) -> dict[str, str]:
    reply = call(server, ADMIN, "GET", f"/api/2.0/mlflow/registered-models/get?name={name}")
    return {t["key"]: t["value"] for t in reply.json()["registered_model"].get("tags", [])}


def refused(reply: requests.Response) -> str:
    """The message of a 403 in MLflow's JSON error shape."""
    assert reply.status_code == 403, (reply.status_code, reply.text)
    assert reply.json()["error_code"] == "PERMISSION_DENIED", reply.text
    return reply.json()["message"]


@pytest.mark.slow
def test_an_edit_user_cannot_set_or_delete_champion_by_raw_rest_but_sets_challenger(governed):
    before = aliases(governed)
    for path in (ALIAS_PATH, ALIAS_PATH.replace("/api/", "/ajax-api/")):
        message = refused(call(governed, OPS, "POST", path, name=MODEL, alias="champion", version="2"))
        assert message == (
            f"Alias 'champion' of registered model '{MODEL}' is protected: setting it takes MANAGE permission on "
            f"'{MODEL}' (user '{OPS}' has EDIT); ask a user with MANAGE (the approver role of `sentiment-flow "
            "add-user`) to approve it."
        )
    message = refused(call(governed, OPS, "DELETE", ALIAS_PATH, name=MODEL, alias="champion"))
    assert "protected: deleting it takes MANAGE" in message
    assert aliases(governed) == before == {"champion": "1"}

    assert call(governed, OPS, "POST", ALIAS_PATH, name=MODEL, alias="challenger", version="2").status_code == 200
    assert aliases(governed) == {"champion": "1", "challenger": "2"}
    # What `--protected-alias` adds is protected the same way.
    assert "Alias 'production'" in refused(
        call(governed, OPS, "POST", ALIAS_PATH, name=MODEL, alias="production", version="2")
    )
    assert "production" not in aliases(governed)


@pytest.mark.slow
def test_a_manage_holder_and_the_admin_move_champion_and_a_viewer_is_told_what_it_takes(governed):
    assert call(governed, APPROVER, "POST", ALIAS_PATH, name=MODEL, alias="champion", version="2").status_code == 200
    assert aliases(governed)["champion"] == "2"
    assert call(governed, ADMIN, "POST", ALIAS_PATH, name=MODEL, alias="champion", version="1").status_code == 200
    assert aliases(governed)["champion"] == "1"

    # Through MLflow's client, the CLI's one line names the permission and the role that has it.
    with pytest.MonkeyPatch.context() as mp:
        log_in(mp, governed, VIEWER, PASSWORDS[VIEWER])
        with pytest.raises(MlflowException) as denied:
            MlflowClient().set_registered_model_alias(MODEL, "champion", "2")
        assert refusals.permission_denied(denied.value) == (
            f"The tracking server refused POST {ALIAS_PATH} (HTTP 403): user '{VIEWER}' lacks MANAGE permission on "
            f"registered model '{MODEL}' (its alias 'champion' is protected); ask an admin of the server to grant "
            "it (the approver role of `sentiment-flow add-user` does)."
        )
    assert aliases(governed)["champion"] == "1"


@pytest.mark.slow
def test_renaming_a_model_that_holds_champion_takes_manage(governed):
    message = refused(call(governed, OPS, "POST", "/api/2.0/mlflow/registered-models/rename", name=MODEL, new_name="x"))
    assert "holds the protected alias 'champion'" in message and f"user '{OPS}' has EDIT" in message
    assert aliases(governed)["champion"] == "1"


@pytest.mark.slow
def test_a_read_only_user_cannot_create_sentiment_english_int8_and_ops_can(governed):
    create = "/api/2.0/mlflow/registered-models/create"
    assert call(governed, ADMIN, "POST", create, name="sentiment-english").status_code == 200
    message = refused(call(governed, VIEWER, "POST", create, name="sentiment-english-int8"))
    assert message == (
        f"Creating registered model 'sentiment-english-int8' takes EDIT permission on registered models (user "
        f"'{VIEWER}' has READ); the ops role of `sentiment-flow add-user` grants it."
    )
    assert (
        call(governed, ADMIN, "GET", "/api/2.0/mlflow/registered-models/get?name=sentiment-english-int8").status_code
        == 404
    )
    # A new name of one's own, too: a viewer registers nothing.
    assert "takes EDIT permission" in refused(
        call(governed, VIEWER, "POST", create, name=f"mine-{uuid.uuid4().hex[:6]}")
    )

    assert call(governed, OPS, "POST", create, name="sentiment-english-int8").status_code == 200


@pytest.mark.slow
def test_an_int8_variant_and_a_copy_belong_to_the_owners_of_their_source_model(governed):
    admin = get_app_client("basic-auth", tracking_uri=governed.url)
    with pytest.MonkeyPatch.context() as mp:
        log_in(mp, governed, ADMIN, PASSWORD)
        MlflowClient().create_registered_model("owned")
        with mlflow.start_run() as run:
            mlflow.log_text("not a model", "model/README.txt")
        MlflowClient().create_model_version("owned", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        admin.grant_user_permission(OWNER, "registered_model", "owned", "MANAGE")
        log_in(mp, governed, OPS, PASSWORDS[OPS])
        MlflowClient().create_registered_model("owned-int8")
        MlflowClient().copy_model_version("models:/owned/1", "owned-copy")
        MlflowClient().copy_model_version("models:/owned/1", "owned-copy")  # version 2 grants nothing more
        log_in(mp, governed, ADMIN, PASSWORD)
        for name in ("owned-int8", "owned-copy"):
            assert admin.get_user_permission(OWNER, "registered_model", name).permission == "MANAGE"
            assert admin.get_user_permission(OPS, "registered_model", name).permission == "MANAGE"  # its creator
        MlflowClient().create_registered_model("unrelated")  # neither a variant nor a copy: not the owner's
        try:
            held = admin.get_user_permission(OWNER, "registered_model", "unrelated").permission
        except MlflowException:
            held = None
        assert held != "MANAGE"


@pytest.mark.slow
def test_an_audit_record_is_append_only_and_signed_by_its_author(governed):
    set_tag, delete_tag = "/api/2.0/mlflow/registered-models/set-tag", "/api/2.0/mlflow/registered-models/delete-tag"
    key = f"audit.champion.{uuid.uuid4().hex[:8]}"
    record = json.dumps({"event": "promote", "by": OPS})
    assert call(governed, OPS, "POST", set_tag, name=MODEL, key=key, value=record).status_code == 200

    assert "never overwritten" in refused(
        call(governed, ADMIN, "POST", set_tag, name=MODEL, key=key, value=json.dumps({"by": ADMIN}))
    )
    for user in (OPS, APPROVER, ADMIN):
        assert "append-only" in refused(call(governed, user, "DELETE", delete_tag, name=MODEL, key=key))
    message = refused(
        call(governed, OPS, "POST", set_tag, name=MODEL, key=f"{key}-forged", value=json.dumps({"by": APPROVER}))
    )
    assert f"'by' = the authenticated user '{OPS}', not '{APPROVER}'" in message
    assert "not None" in refused(call(governed, ADMIN, "POST", set_tag, name=MODEL, key=f"{key}-x", value="not json"))
    model_tags = tags(governed)
    assert model_tags[key] == record and f"{key}-forged" not in model_tags and f"{key}-x" not in model_tags


@pytest.mark.slow
def test_an_approval_request_is_its_requesters_and_only_they_or_a_manage_holder_withdraw_it(governed):
    set_tag, delete_tag = "/api/2.0/mlflow/registered-models/set-tag", "/api/2.0/mlflow/registered-models/delete-tag"
    key = f"approval.champion.{uuid.uuid4().hex[:8]}"
    message = refused(
        call(governed, OPS, "POST", set_tag, name=MODEL, key=key, value=json.dumps({"requested_by": APPROVER}))
    )
    assert f"'requested_by' = the authenticated user '{OPS}', not '{APPROVER}'" in message
    request = json.dumps({"requested_by": OPS, "version": "2"})
    assert call(governed, OPS, "POST", set_tag, name=MODEL, key=key, value=request).status_code == 200
    assert "never overwritten" in refused(call(governed, OPS, "POST", set_tag, name=MODEL, key=key, value=request))

    message = refused(call(governed, VIEWER, "DELETE", delete_tag, name=MODEL, key=key))
    assert (
        f"was made by '{OPS}': only they, a user with MANAGE permission on '{MODEL}' or an admin withdraw it" in message
    )
    assert tags(governed)[key] == request
    assert call(governed, APPROVER, "DELETE", delete_tag, name=MODEL, key=key).status_code == 200
    assert key not in tags(governed)

    # Its requester withdraws their own.
    assert call(governed, OPS, "POST", set_tag, name=MODEL, key=f"{key}b", value=request).status_code == 200
    assert call(governed, OPS, "DELETE", delete_tag, name=MODEL, key=f"{key}b").status_code == 200
    assert f"{key}b" not in tags(governed)


@pytest.mark.slow
def test_a_forged_audit_record_cannot_come_in_with_a_new_model(governed):
    create = "/api/2.0/mlflow/registered-models/create"
    forged = [{"key": "audit.champion.1", "value": json.dumps({"by": APPROVER})}]
    assert "'by' = the authenticated user" in refused(call(governed, OPS, "POST", create, name="forged", tags=forged))
    assert call(governed, ADMIN, "GET", "/api/2.0/mlflow/registered-models/get?name=forged").status_code == 404


@pytest.mark.slow
def test_every_user_reads_the_protected_aliases_the_server_publishes(governed, monkeypatch):
    reply = call(governed, VIEWER, "GET", GOVERNANCE_ENDPOINT)
    assert reply.status_code == 200 and reply.json() == {"protected_aliases": ["champion", "production"]}
    assert call(governed, VIEWER, "GET", GOVERNANCE_ENDPOINT.replace("/api/", "/ajax-api/")).ok
    assert requests.get(governed.url + GOVERNANCE_ENDPOINT, timeout=30).status_code == 401
    log_in(monkeypatch, governed, VIEWER, PASSWORDS[VIEWER])
    assert identity.protected_aliases() == ("champion", "production")  # what `promote` reads


@pytest.mark.slow
def test_an_ops_user_trains_a_new_model_and_optimizes_it_into_name_int8_through_the_cli(
    governed, monkeypatch, tiny_model_dir, tiny_data_dir
):
    from test_server_users import train_args

    name = "ops-english"  # a name no one has created: the first training registers it
    log_in(monkeypatch, governed, OPS, PASSWORDS[OPS])
    code, output = run_cli(*train_args(tiny_model_dir, tiny_data_dir, name))
    assert code == 0, output[-3000:]
    code, output = run_cli("optimize", f"models:/{name}/1")
    assert code == 0, output[-3000:]
    client = MlflowClient()
    assert client.get_model_version(f"{name}-int8", "1").tags["source_model"] == name
