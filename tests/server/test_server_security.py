"""What another local user can reach of the team server, and what dies with it.

The embedded PostgreSQL admits no other local user at any data dir path length, holds no secret in its
environment, and the server changes no folder's mode outside its data dir (these need root, to create a
second user). Killing PostgreSQL stops the server in one line; killing the server stops everything it started.
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
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import mlflow
import psutil
import pytest
from click.testing import CliRunner

from sentiment_flow.cli import cli
from sentiment_flow.server import app as server
from sentiment_flow.server import postgres as embedded_postgres

from conftest import free_port, subprocess_env

pytest.importorskip("pgserver", reason='the [server] extra is not installed: pip install -e ".[server]"')

AS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: it creates a second, unprivileged user to attack with"
)
INTRUDER = "sf-intruder"  # the unprivileged local user the tests attack with
SENTINEL = f"sentinel-{uuid.uuid4().hex}"  # the admin password in the environment PostgreSQL must not inherit
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # runuser lives in sbin
LONG = "d" * 90  # makes DATA_DIR/postgres/.s.PGSQL.5432 longer than a unix socket path may be


@pytest.fixture
def open_dir():
    """A folder every user may pass through (pytest's own tmp dirs are closed to other users)."""
    path = Path(tempfile.mkdtemp(prefix="sf-security-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def intruder():
    """An unprivileged local user; removed afterwards if this module created it."""
    useradd = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", INTRUDER]
    created = subprocess.run(useradd, check=False, capture_output=True).returncode == 0
    try:
        yield INTRUDER
    finally:
        if created:
            subprocess.run(["userdel", INTRUDER], check=False, capture_output=True)


def modes_up_to_root(path: Path) -> dict[Path, int]:
    """The mode of `path`'s parents, up to /."""
    return {parent: parent.stat().st_mode for parent in path.parents}


def psql(postgres: embedded_postgres.EmbeddedPostgres, env: dict[str, str], as_user: str | None = None):
    """`psql -c 'select 1'` on the server's socket as `as_user` (None: ourselves), never prompting."""
    command = [
        str(embedded_postgres._pg_bin() / "psql"),
        "-h",
        str(postgres.socket_dir),
        "-U",
        embedded_postgres.SUPERUSER,
        "-d",
        "postgres",
        "-w",
        "-c",
        "select 1",
    ]
    if as_user:
        command = ["runuser", "-u", as_user, "--", *command]
    return subprocess.run(
        command, check=False, env={"PATH": SYSTEM_PATH, **env}, cwd="/", capture_output=True, text=True, timeout=60
    )


@AS_ROOT
@pytest.mark.slow
@pytest.mark.parametrize("name", ["short", LONG], ids=["socket-in-data-dir", "path-too-long-for-a-socket"])
def test_no_other_local_user_reaches_the_embedded_database_or_its_files(open_dir, intruder, monkeypatch, name):
    monkeypatch.setenv(server.ADMIN_PASSWORD_VAR, SENTINEL)
    data_dir = open_dir / name
    data_dir.mkdir(mode=0o711)  # as `server.start` makes it when root
    before = modes_up_to_root(data_dir)
    postgres = embedded_postgres.start_postgres(data_dir / "postgres", data_dir / "pgpass")
    try:
        assert (postgres.socket_dir == postgres.pgdata) == (name == "short")
        # Our own user with the passfile gets in, so the refusals below are refusals, not a broken database.
        ours = psql(postgres, {"PGPASSFILE": str(postgres.passfile)})
        assert ours.returncode == 0, ours.stderr
        # Without the password even root, who may open any socket, is refused: no trust authentication.
        no_password = psql(postgres, {})
        assert no_password.returncode != 0 and "password" in no_password.stderr, no_password.stderr
        # Another user cannot reach the socket at all, nor read the database's files or the password.
        theirs = psql(postgres, {}, as_user=intruder)
        assert theirs.returncode != 0 and "Permission denied" in theirs.stderr, theirs.stderr
        for path in (postgres.passfile, postgres.pgdata / "PG_VERSION", postgres.pgdata / "pg_hba.conf"):
            read = subprocess.run(["runuser", "-u", intruder, "--", "cat", str(path)], check=False, capture_output=True)
            assert read.returncode != 0 and b"Permission denied" in read.stderr, path
        assert oct(postgres.socket_dir.stat().st_mode & 0o777) == oct(0o700)
        # PostgreSQL inherited nothing secret: the old server's `COPY ... FROM PROGRAM 'env'` printed the password.
        environ = Path(f"/proc/{postgres.pid}/environ").read_bytes()
        assert SENTINEL.encode() not in environ and server.ADMIN_PASSWORD_VAR.encode() not in environ
        assert b"PGPASSFILE" not in environ
        assert modes_up_to_root(data_dir) == before  # pgserver added g+rx,o+rx to every parent
    finally:
        postgres.stop()
    assert not postgres.running()
    assert name == "short" or not postgres.socket_dir.exists()  # the private /tmp socket folder is removed


@pytest.mark.slow
def test_a_trust_cluster_made_by_pgserver_gets_a_password_on_the_next_start(open_dir):
    data_dir = open_dir / "old"
    data_dir.mkdir(mode=0o711)
    pgdata = data_dir / "postgres"
    pgdata.mkdir(mode=0o700)
    user = embedded_postgres._ensure_service_user(print) if os.geteuid() == 0 else None
    if user is not None:
        os.chown(pgdata, user.pw_uid, user.pw_gid)
    # What pgserver.get_server ran, and the older version of this server with it.
    embedded_postgres._pg_run(["initdb", "-D", str(pgdata), "-U", embedded_postgres.SUPERUSER, "--auth=trust"], user)
    postgres = embedded_postgres.start_postgres(pgdata, data_dir / "pgpass")
    try:
        no_password = psql(postgres, {})
        assert no_password.returncode != 0 and "password" in no_password.stderr, no_password.stderr
        ours = psql(postgres, {"PGPASSFILE": str(postgres.passfile)})
        assert ours.returncode == 0, ours.stderr
        assert "trust" not in (pgdata / "pg_hba.conf").read_text()
    finally:
        postgres.stop()


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@AS_ROOT
def test_a_data_dir_behind_a_closed_folder_is_refused_after_announcing_useradd_and_no_mode_changes(
    open_dir, monkeypatch
):
    user = f"sf-svc-{uuid.uuid4().hex[:8]}"  # a service user of our own: the real one may be in use
    monkeypatch.setattr(embedded_postgres, "SERVICE_USER", user)
    closed = open_dir / "private"
    closed.mkdir(mode=0o700)  # like a home folder holding private files
    (closed / "secret.txt").write_text("private")
    before = modes_up_to_root(closed / "data")
    try:
        code, output = run_cli("server", "--data-dir", str(closed / "data"), "--port", str(free_port()))
        subprocess.run(["id", user], check=True, capture_output=True)  # it did create the user it announced
    finally:
        subprocess.run(["userdel", user], check=False, capture_output=True)
    lines = output.strip().splitlines()
    assert code == 2, output
    # Said before it happened: the first line, ahead of the error.
    assert "useradd --system" in lines[0] and user in lines[0] and "root" in lines[0], output
    assert lines[-1].startswith("Error:") and f"cannot enter {closed}" in lines[-1] and "chmod o+x" in lines[-1]
    assert len(lines) == 2 and "Traceback" not in output
    assert modes_up_to_root(closed / "data") == before
    assert not (closed / "data" / "postgres").exists()


class Unavailable(BaseHTTPRequestHandler):
    """Answers like `mlflow server` whose PostgreSQL is gone: the tracking store with 503 and the driver's error
    in the body, the model registry with 500 (both seen from mlflow 3.17 after kill -9 of its PostgreSQL)."""

    status = 503

    def do_GET(self):
        body = json.dumps(
            {
                "error_code": "TEMPORARILY_UNAVAILABLE",
                "message": '(psycopg2.OperationalError) connection to server on socket "/tmp/x/.s.PGSQL.5432" failed',
            }
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [503, 500])
def test_a_client_says_the_tracking_servers_database_is_down_without_its_error_text(monkeypatch, status):
    unavailable = HTTPServer(("127.0.0.1", 0), type("Failing", (Unavailable,), {"status": status}))
    threading.Thread(target=unavailable.serve_forever, daemon=True).start()
    url = f"http://alice:{SENTINEL}@127.0.0.1:{unavailable.server_port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow retries a 503 for minutes otherwise
    mlflow.set_tracking_uri(url)
    try:
        code, output = run_cli("status", "any-model")
    finally:
        unavailable.shutdown()
    assert code == 2 and f"database is down (HTTP {status})" in output, output
    assert "Cannot reach" not in output and ".s.PGSQL" not in output and SENTINEL not in output
    assert len(output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------
# `sentiment-flow server` as a process, killed in parts


def start_cli_server(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`sentiment-flow server` on `data_dir`, once it printed the URI to export (it answers then)."""
    command = [
        sys.executable,
        "-m",
        "sentiment_flow",
        "server",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while "export MLFLOW_TRACKING_URI=" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.5)
    return process


def everything_started(cli_server: subprocess.Popen, pgdata: Path) -> list[psutil.Process]:
    """The server's descendants (mlflow server, uvicorn, its workers, the reaper), the postmaster and its backends."""
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    return [*psutil.Process(cli_server.pid).children(recursive=True), postmaster, *postmaster.children()]


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive(processes)


def kill_all(cli_server: subprocess.Popen, processes: list[psutil.Process]) -> None:
    """After a failed test: whatever is left of the server."""
    for process in alive(processes):
        process.kill()
    if cli_server.poll() is None:
        cli_server.kill()
        cli_server.wait()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.slow
def test_sigkill_of_the_server_stops_mlflow_server_and_postgresql_and_a_restart_works(open_dir):
    data_dir, port = open_dir / LONG / "data", free_port()  # a long path: its private socket folder goes too
    cli_server = start_cli_server(data_dir, port, open_dir / "first.log")
    started = everything_started(cli_server, data_dir / "postgres")
    socket_dir = Path((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[4])
    try:
        assert len(started) >= 4, started  # at least mlflow server, uvicorn, the reaper and the postmaster
        cli_server.send_signal(signal.SIGKILL)
        cli_server.wait()
        assert wait_gone(started, timeout=60) == []
        assert port_is_free(port)
    finally:
        kill_all(cli_server, started)
    assert socket_dir.parent == Path(tempfile.gettempdir()) and not socket_dir.exists()
    restarted = start_cli_server(data_dir, port, open_dir / "second.log")
    again = everything_started(restarted, data_dir / "postgres")
    try:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=120) == 128 + signal.SIGTERM
        assert wait_gone(again, timeout=30) == []
    finally:
        kill_all(restarted, again)


@pytest.mark.slow
def test_the_server_exits_in_one_line_when_its_postgresql_is_killed(open_dir):
    data_dir, log_path = open_dir / "data", open_dir / "server.log"
    cli_server = start_cli_server(data_dir, free_port(), log_path)
    started = everything_started(cli_server, data_dir / "postgres")
    try:
        psutil.Process(int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])).kill()
        assert cli_server.wait(timeout=60) == 2
        assert wait_gone(started, timeout=60) == []
    finally:
        kill_all(cli_server, started)
    last = log_path.read_text().strip().splitlines()[-1]
    assert last.startswith("Error: The embedded PostgreSQL stopped unexpectedly") and "Start the same command" in last
    assert "Traceback" not in log_path.read_text()
