"""A new user of the team server (`--auth`, default_permission = READ), added by `sentiment-flow add-user`.

Against a real server on pgserver's PostgreSQL (the `team` fixture of test_server.py, a server of this module's
own): a viewer is refused writes in one line naming the permission and the resource; an ops user runs the
README's commands on a model the admin created; the README's `get_app_client` snippet runs.
"""

from __future__ import annotations

import re
import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.server import get_app_client

from sentiment_flow.config import SCORING_EXPERIMENT
from sentiment_flow.server import refusals
from sentiment_flow.server import users as server_users

from conftest import REPO_ROOT
from test_server import ADMIN, PASSWORD, log_in, mlflow_run, run_cli, team  # noqa: F401 - team: the fixture

MODEL = "users-english"  # created by the admin: an ops user needs the role's EDIT to add versions to it
VIEWER, OPS = "bob", "alice"
VIEWER_PASSWORD, OPS_PASSWORD = f"viewer-{uuid.uuid4().hex}", f"ops-{uuid.uuid4().hex}"


@pytest.fixture
def login(team, monkeypatch):  # noqa: F811 - the imported fixture
    """Switch this test's client (and its subprocesses) to a user of the team server."""

    def as_user(username: str, password: str) -> None:
        log_in(monkeypatch, team, username, password)

    return as_user


def add_user(monkeypatch, *args: str, password: str | None = None) -> tuple[int, str]:
    if password is None:
        monkeypatch.delenv(server_users.NEW_PASSWORD_VAR, raising=False)
    else:
        monkeypatch.setenv(server_users.NEW_PASSWORD_VAR, password)
    return run_cli("add-user", *args)


def one_line_error(output: str) -> str:
    """The error line that ends `output` (training's progress bars may come before it): the only one."""
    errors = [line for line in output.strip().splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and output.strip().endswith(errors[0]) and "Traceback" not in output, output
    return errors[0]


def train_args(tiny_model_dir, tiny_data_dir, name: str) -> list[str]:
    return [
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tiny_data_dir),
        "--epochs",
        "1",
        "--max-train-samples",
        "32",
        "--batch-size",
        "16",
        "--max-length",
        "32",
        "--learning-rate",
        "5e-3",
        "--registered-model-name",
        name,
    ]


def test_add_user_needs_a_team_server_not_a_local_store():
    code, output = run_cli("add-user", "carol", "--role", "ops")
    assert code == 2 and "MLFLOW_TRACKING_URI" in one_line_error(output) and "sqlite:///" in output


def test_a_refused_version_delete_names_manage_on_the_model_and_the_approver_role_that_has_it(monkeypatch):
    """MANAGE on registered models is the approver's, the smallest role that has it."""
    import requests
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")

    def delete_version():  # what MLflow's client holds when the server answers 403
        response = requests.Response()
        response.status_code = 403
        response.request = requests.Request(
            "DELETE",
            "http://mlflow.internal:5000/api/2.0/mlflow/model-versions/delete",
            json={"name": "sentiment-english", "version": "3"},
        ).prepare()
        raise MlflowException("Permission denied", error_code="PERMISSION_DENIED")

    with pytest.raises(MlflowException) as refused:
        delete_version()
    assert refusals.permission_denied(refused.value) == (
        "The tracking server refused DELETE /api/2.0/mlflow/model-versions/delete (HTTP 403): user 'carol' lacks "
        "MANAGE permission on registered model 'sentiment-english'; ask an admin of the server to grant it (the "
        "approver role of `sentiment-flow add-user` does)."
    )


@pytest.mark.slow
def test_a_viewer_cannot_train_and_is_told_the_permission_and_the_experiment(
    team,  # noqa: F811 - the fixture, imported from test_server
    login,
    monkeypatch,
    tiny_model_dir,
    tiny_data_dir,
):
    login(ADMIN, PASSWORD)
    code, output = add_user(monkeypatch, VIEWER, "--role", "viewer", password="short")
    assert code == 2 and "at least 12 characters" in one_line_error(output)
    with pytest.raises(mlflow.exceptions.MlflowException):  # a refused password creates nothing
        get_app_client("basic-auth", tracking_uri=team.url).get_user(VIEWER)

    code, output = add_user(monkeypatch, VIEWER, "--role", "viewer", password=VIEWER_PASSWORD)
    assert code == 0 and f"Created user {VIEWER}" in output and "READ on experiments Default (id 0)" in output, output
    assert VIEWER_PASSWORD not in output

    login(VIEWER, VIEWER_PASSWORD)
    code, output = run_cli(*train_args(tiny_model_dir, tiny_data_dir, MODEL))
    line = one_line_error(output)
    assert code == 2, output
    assert (
        f"refused POST /api/2.0/mlflow/runs/create (HTTP 403): user '{VIEWER}' lacks EDIT permission on "
        "experiment 'Default' (id 0)" in line
    ), line
    assert "the ops role of `sentiment-flow add-user`" in line
    assert MlflowClient().search_registered_models(f"name = '{MODEL}'") == []  # nothing half-written

    # A user who is no admin cannot add users.
    code, output = add_user(monkeypatch, "mallory", "--role", "ops", password=f"x-{uuid.uuid4().hex}")
    assert code == 2 and f"user '{VIEWER}' is not an admin of the server" in one_line_error(output), output


@pytest.mark.slow
def test_an_ops_user_runs_the_readme_commands_on_a_model_the_admin_created(
    team,  # noqa: F811 - the fixture, imported from test_server
    login,
    monkeypatch,
    tiny_model_dir,
    tiny_data_dir,
    tmp_path,
):
    login(ADMIN, PASSWORD)
    MlflowClient().create_registered_model(MODEL)  # the admin's: MLflow gives only its creator MANAGE on it
    code, output = add_user(monkeypatch, OPS, "--role", "ops", password=OPS_PASSWORD)
    assert code == 0 and f"Created user {OPS}" in output and "EDIT on every registered model" in output, output

    login(OPS, OPS_PASSWORD)
    # `mlflow run .` as in the README: its run in the Default experiment, then a version of the admin's model.
    training = mlflow_run(team, tmp_path / "train", tiny_model_dir, tiny_data_dir, name=MODEL)
    assert training.wait(timeout=900) == 0, (tmp_path / "train" / "mlflow-run.log").read_text()[-3000:]
    client = MlflowClient()
    version = client.get_registered_model(MODEL).latest_versions[0].version
    assert client.get_run(client.get_model_version(MODEL, version).run_id).info.experiment_id == "0"

    pd.DataFrame({"text": ["great food", "awful service"]}).to_csv(tmp_path / "in.csv", index=False)
    code, output = run_cli("score", f"models:/{MODEL}/{version}", str(tmp_path / "in.csv"), str(tmp_path / "out.csv"))
    assert code == 0, output
    assert client.search_runs([client.get_experiment_by_name(SCORING_EXPERIMENT).experiment_id])
    code, output = run_cli(
        "promote", MODEL, "--version", version, "--alias", "champion", "--dry-run", "--min-f1-macro", "0"
    )
    assert code == 0, output
    # champion is protected (MANAGE, the approver's: test_governance.py); challenger is not.
    code, output = run_cli("promote", MODEL, "--version", version, "--alias", "challenger", "--min-f1-macro", "0")
    assert code == 0 and client.get_registered_model(MODEL).aliases == {"challenger": version}, output

    # The viewer reads it, but may not promote.
    login(VIEWER, VIEWER_PASSWORD)
    code, output = run_cli("status", MODEL)
    assert code == 0 and "challenger" in output, output
    code, output = run_cli("promote", MODEL, "--version", version, "--alias", "champion", "--min-f1-macro", "0")
    assert code == 2 and (
        f"refused POST /api/2.0/mlflow/registered-models/set-tag (HTTP 403): user '{VIEWER}' lacks EDIT permission "
        f"on registered model '{MODEL}'; ask an admin of the server to grant it (the ops role of "
        "`sentiment-flow add-user` does)."
    ) in one_line_error(output), output
    assert "champion" not in client.get_registered_model(MODEL).aliases
    code, output = run_cli("score", f"models:/{MODEL}/{version}", str(tmp_path / "in.csv"), str(tmp_path / "v.csv"))
    assert code == 2 and re.search(
        rf"user '{VIEWER}' lacks EDIT permission on experiment '{SCORING_EXPERIMENT}' \(id \d+\)",
        one_line_error(output),
    ), output


@pytest.mark.slow
def test_an_existing_user_keeps_its_password_and_gains_the_role_and_the_readme_snippet_shows_it(
    team,  # noqa: F811 - the fixture, imported from test_server
    login,
    monkeypatch,
    tiny_model_dir,
    tiny_data_dir,
):
    login(ADMIN, PASSWORD)
    code, output = add_user(monkeypatch, VIEWER, "--role", "ops", "--experiment", "team-users", password=None)
    assert code == 0 and f"User {VIEWER} exists (password unchanged)" in output and "team-users (id " in output, output

    # The docs' snippet, as written, with this server and user.
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "docs" / "server.md").read_text(), re.DOTALL)
    snippets = [block for block in blocks if "get_app_client" in block]
    assert len(snippets) == 1, "docs/server.md: the get_app_client snippet is gone"
    namespace = {}
    exec(snippets[0].replace('"alice"', repr(VIEWER)), namespace)  # noqa: S102 - the README's own text
    assert {"sentiment-flow-viewer", "sentiment-flow-ops"} <= set(namespace["roles"])

    login(VIEWER, VIEWER_PASSWORD)  # the old password still works, and the new role lets it write
    with mlflow.start_run(experiment_id=MlflowClient().get_experiment_by_name("team-users").experiment_id) as run:
        mlflow.log_param("by", VIEWER)
    assert MlflowClient().get_run(run.info.run_id).data.params == {"by": VIEWER}
