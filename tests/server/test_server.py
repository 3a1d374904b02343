"""The team server for real: `mlflow server` with basic auth on pgserver's PostgreSQL, proxied artifacts.

One server is shared by the module (starting it migrates two databases: tens of seconds); every client
logs in as the admin with a sentinel password that must never land in the database, artifacts or logs.
The restart test stops it and runs `sentiment-flow server` on the same data dir, so it comes last.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from sentiment_flow import registry
from sentiment_flow.cli import cli
from sentiment_flow.server import app as server
from sentiment_flow.server import postgres as embedded_postgres

from conftest import REPO_ROOT, free_port, http_service, subprocess_env

pytest.importorskip("pgserver", reason='the [server] extra is not installed: pip install -e ".[server]"')

ADMIN = "admin"
PASSWORD = f"sentinel-{uuid.uuid4().hex}"  # MLflow's policy wants 12+ characters
NAME = "team-english"
RACE = "race-english"


@dataclass
class Team:
    root: Path  # data dir, client logs and W&B runs: everything the sentinel must not reach
    data_dir: Path
    port: int
    server: server.TeamServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A running team server with --auth; stopped (with its PostgreSQL) however the module ends."""
    # Under a folder other users may pass through (as root PostgreSQL runs as another user, and pytest's tmp
    # folders are closed), with a path too long for a socket: PostgreSQL's goes to a private /tmp folder.
    root = Path(tempfile.mkdtemp(prefix="sf-team-", dir="/tmp")) / ("t" * 80)
    root.parent.chmod(0o711)
    root.mkdir(mode=0o711)
    port = free_port()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(server.ADMIN_PASSWORD_VAR, PASSWORD)
            started = server.start(root / "data", port=port, workers=2, auth=True)
        team = Team(root, root / "data", port, started)
        try:
            yield team
        finally:
            team.server.stop()
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def log_in(monkeypatch, team, username: str, password: str) -> None:
    """This test's MLflow client (and its subprocesses) talk to the team server as `username`."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("WANDB_DIR", str(team.root))
    mlflow.set_tracking_uri(team.url)


@pytest.fixture
def as_admin(team, monkeypatch):
    """This test's MLflow client (and its subprocesses) talk to the team server as the admin."""
    log_in(monkeypatch, team, ADMIN, PASSWORD)
    return team


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


# ---------------------------------------------------------------------------------------------------------
# Refusals before anything starts


def test_a_port_in_use_is_refused_in_one_line_and_starts_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = run_cli("server", "--data-dir", str(tmp_path / "data"), "--port", str(port))
    assert code == 2 and f"Cannot listen on 127.0.0.1:{port}" in output and "--port" in output, output
    assert len(output.strip().splitlines()) == 1 and not (tmp_path / "data").exists()


def test_auth_without_the_admin_password_in_the_environment_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(server.ADMIN_PASSWORD_VAR, raising=False)
    code, output = run_cli("server", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--auth")
    assert code == 2 and server.ADMIN_PASSWORD_VAR in output and "Traceback" not in output, output


def test_a_backend_store_that_is_not_postgresql_is_refused_without_its_password(tmp_path):
    code, output = run_cli(
        "server",
        "--data-dir",
        str(tmp_path),
        "--port",
        str(free_port()),
        "--backend-store-uri",
        "mysql://ops:hunter2secret@db/mlflow",
    )
    assert code == 2 and "postgresql://" in output and "hunter2secret" not in output, output


# ---------------------------------------------------------------------------------------------------------
# Against the running server


@pytest.mark.slow
@pytest.mark.parametrize("password", [None, "not-the-password"], ids=["no-credentials", "wrong-password"])
def test_requests_without_valid_credentials_are_refused_in_one_line_naming_the_variables(team, monkeypatch, password):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    if password:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    mlflow.set_tracking_uri(team.url)
    code, output = run_cli("status", NAME)
    assert code == 2 and "HTTP 401" in output, output
    assert "MLFLOW_TRACKING_USERNAME" in output and "MLFLOW_TRACKING_PASSWORD" in output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output


def mlflow_run(team: Team, cwd: Path, tiny_model_dir: Path, tiny_data_dir: Path, name: str = NAME) -> subprocess.Popen:
    params = {
        "model": tiny_model_dir,
        "data": tiny_data_dir,
        "epochs": 1,
        "max_train_samples": 96,
        "batch_size": 16,
        "max_length": 32,
        "learning_rate": "5e-3",
        "registered_model_name": name,
    }
    args = [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]
    cwd.mkdir()
    log = open(cwd / "mlflow-run.log", "w")
    return subprocess.Popen(
        ["mlflow", "run", str(REPO_ROOT), *args, "--env-manager", "local"],
        cwd=cwd,
        env=subprocess_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_train_promote_copy_rollback_score_and_serve_all_work_through_the_server(
    as_admin, tiny_model_dir, tiny_data_dir, tmp_path
):
    team = as_admin
    # Four trainings at once register versions of one model: 1-4, none lost.
    trainings = [mlflow_run(team, team.root / f"train-{i}", tiny_model_dir, tiny_data_dir) for i in range(4)]
    codes = [training.wait(timeout=600) for training in trainings]
    assert codes == [0] * 4, [(team.root / f"train-{i}" / "mlflow-run.log").read_text()[-2000:] for i in range(4)]
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert sorted(int(mv.version) for mv in versions) == [1, 2, 3, 4]
    assert len({mv.run_id for mv in versions}) == 4
    # Artifacts went through the server's proxy into its own folder: clients need no shared filesystem.
    run = client.get_run(versions[0].run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert list((team.data_dir / "artifacts").rglob("confusion_matrix.png"))

    # A few tiny training steps learn little: the first champion is let in below the default minimum F1.
    code, output = run_cli("promote", NAME, "--version", "1", "--alias", "champion", "--min-f1-macro", "0")
    assert code == 0, output
    assert run_cli("promote", NAME, "--version", "2", "--alias", "challenger", "--force", "--reason", "try")[0] == 0
    code, output = run_cli("promote", NAME, "--version", "2", "--alias", "champion", "--force", "--reason", "team")
    assert code == 0 and "now points at version 2" in output, output
    code, output = run_cli("status", NAME)
    assert code == 0 and "champion: v2 <- v1 (rollback goes to v1)" in output, output
    code, output = run_cli("copy", f"models:/{NAME}@champion", f"{NAME}-prod")
    assert code == 0 and f"models:/{NAME}-prod/1" in output, output
    code, output = run_cli("rollback", NAME)
    assert code == 0 and "rolled back from version 2 to 1" in output, output

    texts = ["great food today", "it was fine", "the service was awful"]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
    code, output = run_cli("score", f"models:/{NAME}@champion", str(tmp_path / "in.csv"), str(tmp_path / "out.csv"))
    assert code == 0, output
    scored = pd.read_csv(tmp_path / "out.csv")
    assert set(scored["model_version"]) == {f"{NAME}/1"}

    port = free_port()
    command = [
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{NAME}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with http_service(command, f"http://127.0.0.1:{port}", "/ping", team.root / "serve.log") as url:
        request = urllib.request.Request(
            f"{url}/invocations", json.dumps({"inputs": texts}).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = [row["label"] for row in json.loads(response.read())["predictions"]]
    assert served == scored["label"].tolist()


# Each child of the driver is one promotion process: it waits for the others, promotes, exits with the CLI's
# code. Forking after the imports keeps 8 processes x 5 rounds affordable on a small machine; MLflow opens
# a new HTTP session per process id, so the children share no connection.
RACE_DRIVER = """
import json, multiprocessing, os, sys
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import mlflow.transformers  # noqa: F401  (imported once, before forking)
from mlflow import MlflowClient
from sentiment_flow import registry

name, rounds, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
fork = multiprocessing.get_context("fork")

def promote(barrier, version):
    barrier.wait()
    sys.exit(registry.promote(name, version, "champion").exit_code)

def inspect(path, versions):
    client = MlflowClient()
    model = client.get_registered_model(name)
    holder = str(model.aliases["champion"])
    state = {
        "holder": holder,
        "previous": client.get_model_version(name, holder).tags.get("promotion.champion.previous_version"),
        "history_tag": [e["version"] for e in json.loads(model.tags["alias_history.champion"])],
        "status_chain": [e.version for e in registry.status(name).histories["champion"]],
        "pending": [key for key in model.tags if key.startswith("promotion_pending")],
    }
    open(path, "w").write(json.dumps(state))

results = []
for i, versions in enumerate(rounds):
    barrier = fork.Barrier(len(versions))
    racers = {v: fork.Process(target=promote, args=(barrier, v)) for v in versions}
    for racer in racers.values():
        racer.start()
    for racer in racers.values():
        racer.join(600)
    path = f"{out}.{i}"
    inspector = fork.Process(target=inspect, args=(path, versions))
    inspector.start()
    inspector.join(120)
    results.append({"codes": {v: r.exitcode for v, r in racers.items()}, **json.load(open(path))})
json.dump(results, open(out, "w"))
"""


def expected_chain(holder: str, previous: dict[str, str]) -> list[str]:
    """Holders newest first, following rollback targets until one repeats (a version promoted twice)."""
    chain: list[str] = []
    while holder and holder not in chain:
        chain.append(holder)
        holder = previous[holder]
    return chain


@pytest.mark.slow
def test_eight_promotions_at_once_leave_one_holder_and_every_other_process_fails(
    as_admin, register_tiny_model, tmp_path
):
    first = register_tiny_model(RACE, test_f1_macro=0.8, test_accuracy=0.8)  # uploads the weights once
    client = MlflowClient()
    source = client.get_model_version(RACE, first).source
    versions = []
    for _ in range(16):
        with mlflow.start_run() as run:
            mlflow.log_metrics({"test_f1_macro": 0.8, "test_accuracy": 0.8})
        # The tag training writes last: without it the ready gate refuses the version.
        tags = {"mlflow_run_id": run.info.run_id}
        created = client.create_model_version(RACE, source, run.info.run_id, tags=tags, model_id=source.split("/")[-1])
        versions.append(str(created.version))
    assert registry.promote(RACE, first, "champion").promoted
    # Alternate halves, so the holder of one round is never among the next round's candidates.
    rounds = [versions[:8] if i % 2 == 0 else versions[8:] for i in range(5)]

    out = tmp_path / "race.json"
    driver = subprocess.run(
        [sys.executable, "-c", RACE_DRIVER, RACE, json.dumps(rounds), str(out)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=2400,  # a round took ~6 min on a loaded host
    )
    assert driver.returncode == 0, driver.stdout[-2000:] + driver.stderr[-4000:]

    before = first
    previous = {first: ""}  # each holder's rollback target, as the rounds should leave them
    for round_, result in zip(rounds, json.loads(out.read_text())):
        holder = result["holder"]
        assert holder in round_
        assert result["codes"] == {v: 0 if v == holder else 1 for v in round_}, result
        # The losers are skipped: rollback goes to the holder before the race, never to a failed promotion.
        assert result["previous"] == before
        previous[holder] = before
        assert result["history_tag"] == result["status_chain"] == expected_chain(holder, previous), result
        assert result["pending"] == []
        before = holder
    assert registry.rollback(RACE).to_version == json.loads(out.read_text())[-2]["holder"]


@pytest.mark.slow
def test_the_password_is_in_no_database_row_artifact_or_log(team, as_admin):
    """Runs after the workflow and race tests: whatever they wrote is searched."""
    postgres = team.server.postgres
    dump = subprocess.run(
        [str(embedded_postgres._pg_bin() / "pg_dumpall"), "-d", postgres.uri(embedded_postgres.SUPERUSER)],
        capture_output=True,
        timeout=300,
        check=True,
        env={**os.environ, "PGPASSFILE": str(postgres.passfile)},
    ).stdout
    assert b"alembic_version_auth" in dump and b"registered_model" in dump  # the dump has both databases
    assert PASSWORD.encode() not in dump
    hits = [path for path in team.root.rglob("*") if path.is_file() and PASSWORD.encode() in path.read_bytes()]
    assert hits == []


def stop_for_sure(process: subprocess.Popen, pgdata: Path) -> None:
    """After a failed test: the CLI server and, if it could not stop it, its PostgreSQL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # PostgreSQL's "fast" shutdown
        except ProcessLookupError:
            pass  # a stale pid file: PostgreSQL is not running


def snapshot(client: MlflowClient) -> dict:
    """Every registered model's aliases and tags, every version's tags, every run's id, params and metrics."""
    models = {m.name: (dict(m.aliases), m.tags) for m in client.search_registered_models()}
    versions = {
        (mv.name, mv.version): mv.tags for name in models for mv in client.search_model_versions(f"name = '{name}'")
    }
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = {r.info.run_id: (r.data.params, r.data.metrics) for r in client.search_runs(experiments, max_results=1000)}
    return {"models": models, "versions": versions, "runs": runs}


@pytest.mark.slow
def test_sentiment_flow_server_restarts_on_the_same_data_dir_with_everything_and_stops_on_sigterm(as_admin):
    team = as_admin
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_param("restart", "check")
        mlflow.log_text("kept", "kept.txt")
    client.create_registered_model("restart-check", tags={"team": "ops"})
    created = client.create_model_version("restart-check", f"runs:/{run.info.run_id}/kept.txt", run.info.run_id)
    client.set_registered_model_alias("restart-check", "champion", created.version)
    before = snapshot(client)

    team.server.stop()
    assert not (team.data_dir / "postgres" / "postmaster.pid").exists()  # PostgreSQL shut down cleanly
    command = [
        sys.executable,
        "-m",
        "sentiment_flow",
        "server",
        "--data-dir",
        str(team.data_dir),
        "--port",
        str(team.port),
        "--workers",
        "1",
        "--auth",
    ]
    env = subprocess_env(**{server.ADMIN_PASSWORD_VAR: PASSWORD})
    with open(team.root / "cli-server.log", "w") as log:
        cli_server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while f"export MLFLOW_TRACKING_URI={team.url}" not in (team.root / "cli-server.log").read_text():
            assert cli_server.poll() is None and time.monotonic() < deadline, (team.root / "cli-server.log").read_text()
            time.sleep(0.5)
        assert snapshot(client) == before
        assert client.download_artifacts(run.info.run_id, "kept.txt", str(team.root)).endswith("kept.txt")

        cli_server.send_signal(signal.SIGTERM)
        assert cli_server.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        stop_for_sure(cli_server, team.data_dir / "postgres")
    assert not (team.data_dir / "postgres" / "postmaster.pid").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{team.url}/health", timeout=2)
