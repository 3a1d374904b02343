"""No command prints a password: credentials in MLFLOW_TRACKING_URI move into MLflow's basic-auth variables."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from sentiment_flow.cli import cli, user_errors
from sentiment_flow.errors import split_credentials

from conftest import free_port, http_service, subprocess_env

SENTINEL = "pw-sentinel-7d41c9"  # the admin's password: it must appear in no output


def test_split_credentials_takes_user_and_password_out_of_an_http_uri():
    assert split_credentials("http://admin:p%40ss@127.0.0.1:5000/path?x=1") == (
        "http://127.0.0.1:5000/path?x=1",
        "admin",
        "p@ss",  # decoded, as requests sends them
    )
    assert split_credentials("https://admin:pw@mlflow.internal") == ("https://mlflow.internal", "admin", "pw")
    # Nothing to move: no password, or a scheme whose credentials MLflow's basic auth cannot carry.
    for uri in (
        "http://127.0.0.1:5000",
        "http://admin@127.0.0.1:5000",
        "postgresql://u:pw@db/mlflow",
        "sqlite:///mlflow.db",
    ):
        assert split_credentials(uri) == (uri, None, None)


def environment_seen_by_a_command(monkeypatch, uri: str, **env: str):
    """The CLI run with MLFLOW_TRACKING_URI=uri (and `env`); returns its result and the variables it then saw."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seen = {}

    @cli.command("show-environment")
    @user_errors  # as every command
    def show_environment():
        seen.update(
            {
                key: os.environ.get(key)
                for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
            }
        )

    try:
        result = CliRunner().invoke(cli, ["show-environment"])
    finally:
        cli.commands.pop("show-environment")
    return result, seen


def test_a_command_sees_the_tracking_uri_without_its_password_and_the_credentials_in_mlflows_variables(monkeypatch):
    result, seen = environment_seen_by_a_command(monkeypatch, f"http://admin:{SENTINEL}@127.0.0.1:5000")
    assert result.exit_code == 0, result.output
    assert seen == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": SENTINEL,
    }


def test_credentials_in_the_uri_equal_to_mlflows_variables_are_accepted(monkeypatch):
    result, seen = environment_seen_by_a_command(
        monkeypatch,
        f"http://admin:{SENTINEL}@127.0.0.1:5000",
        MLFLOW_TRACKING_USERNAME="admin",
        MLFLOW_TRACKING_PASSWORD=SENTINEL,
    )
    assert result.exit_code == 0, result.output
    assert seen["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"


def test_credentials_in_the_uri_other_than_mlflows_variables_are_refused_in_one_line(monkeypatch):
    result, seen = environment_seen_by_a_command(
        monkeypatch,
        f"http://admin:{SENTINEL}@127.0.0.1:5000",
        MLFLOW_TRACKING_USERNAME="admin",
        MLFLOW_TRACKING_PASSWORD="another-password",
    )
    assert result.exit_code == 2 and seen == {}
    assert result.output == (
        "Error: MLFLOW_TRACKING_URI (http://admin:***@127.0.0.1:5000) carries a user and password other than "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD: remove user:password@ from the URI, or unset "
        "those two variables.\n"
    )


def test_a_command_called_without_the_group_as_registry_scripts_do_moves_the_credentials_too(monkeypatch):
    from sentiment_flow.cli import status_command

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{SENTINEL}@127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "another-password")
    result = CliRunner().invoke(status_command, ["sentiment-english"])
    assert result.exit_code == 2
    assert "carries a user and password other than MLFLOW_TRACKING_USERNAME" in result.output
    assert SENTINEL not in result.output


@pytest.fixture
def auth_server(tmp_path, monkeypatch):
    """A plain `mlflow server` with MLflow's basic auth (admin's password: SENTINEL), sqlite stores in tmp_path."""
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/auth.db\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(config))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", SENTINEL)
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "csrf-key-of-this-test")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--serve-artifacts",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
    ]
    with http_service(command, f"http://127.0.0.1:{port}", "/health", tmp_path / "server.log") as url:
        # The commands below get the password only inside the URI.
        for key in (
            "MLFLOW_AUTH_CONFIG_PATH",
            "MLFLOW_AUTH_ADMIN_PASSWORD",
            "MLFLOW_FLASK_SERVER_SECRET_KEY",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        ):
            monkeypatch.delenv(key, raising=False)
        yield url


@pytest.mark.slow
def test_train_score_and_promote_print_no_password_from_a_uri_with_credentials(
    auth_server, tiny_model_dir, tiny_data_dir, tmp_path
):
    uri = auth_server.replace("http://", f"http://admin:{SENTINEL}@")
    inputs = tmp_path / "in.csv"
    inputs.write_text("text\nthe food was great\nthe day was awful\n")
    steps = {
        "train": [
            "-v",
            "train",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(tiny_data_dir),
            "--epochs",
            "1",
            "--learning-rate",
            "5e-3",
            "--max-length",
            "32",
        ],
        "promote": [
            "-v",
            "promote",
            "sentiment-english",
            "--version",
            "1",
            "--alias",
            "champion",
            "--min-f1-macro",
            "0",
        ],
        "score": ["-v", "score", "models:/sentiment-english@champion", str(inputs), str(tmp_path / "out.csv")],
    }
    links = {}
    for name, args in steps.items():
        proc = subprocess.run(
            [sys.executable, "-m", "sentiment_flow", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=subprocess_env(MLFLOW_TRACKING_URI=uri, WANDB_MODE="offline"),
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-3000:]  # the server refuses a request without the admin's password
        assert SENTINEL not in output, name
        links[name] = [line for line in output.splitlines() if "View run" in line]
    # MLflow links every run it ends on an HTTP store; they point at the server, without credentials.
    assert links["train"] and links["score"]
    for line in sum(links.values(), []):
        assert f" at: {auth_server}/#/experiments/" in line, line
