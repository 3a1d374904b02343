"""Team tracking server: `mlflow server` on PostgreSQL with proxied artifacts, started and stopped as one.

Embedded (the default): PostgreSQL (see postgres.py) keeps its data in DATA_DIR/postgres and admits
only this process's user, with the password in the libpq passfile DATA_DIR/pgpass; artifacts go to
DATA_DIR/artifacts. A reaper process in its own session stops `mlflow server` and PostgreSQL when this
process dies, even by SIGKILL; `TeamServer.wait` stops the server when PostgreSQL dies. Production:
`backend_store_uri` names an existing PostgreSQL and nothing else is started. Either way the server proxies artifacts
(`--serve-artifacts`), so clients need only its URL, never a shared filesystem.

With `auth`, the governance app runs (governance.py: MLflow's own basic-auth app plus protected aliases,
name creation and audit rules): its users live in the same PostgreSQL (database `mlflow_auth` when
embedded), and the admin password is read by MLflow itself from MLFLOW_AUTH_ADMIN_PASSWORD in the
environment, so it never passes through argv, a file or a log.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sentiment_flow.config import DEFAULT_PROTECTED_ALIASES
from sentiment_flow.errors import UserError, redact_uri
from sentiment_flow.server.postgres import (
    SUPERUSER,
    EmbeddedPostgres,
    last_error_line,
    start_postgres,
)
from sentiment_flow.server.reaper import ADMIN_PASSWORD_VAR, Reaper, stop_group
from sentiment_flow.server.users import PROTECTED_ALIASES_VAR, write_auth_config
from sentiment_flow.server.webhooks import server_env as webhook_env

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "mlflow-server"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 4  # mlflow server's own default
APP_NAME = "sentiment-flow"  # the governance app's `mlflow.app` entry point (pyproject.toml)
DATABASE, AUTH_DATABASE = "mlflow", "mlflow_auth"  # databases created in the embedded PostgreSQL
START_TIMEOUT = 180.0  # seconds for migrations on a fresh database plus the workers' imports, on a busy host
WATCH_INTERVAL = 1.0  # seconds between checks that the embedded PostgreSQL is still alive


@dataclass
class TeamServer:
    """A running team server: its URL for MLFLOW_TRACKING_URI, its processes and where it keeps things."""

    url: str
    process: subprocess.Popen
    log_path: Path
    artifacts: str
    backend: str  # the backend store URI without credentials, safe to print
    reaper: Reaper
    postgres: EmbeddedPostgres | None = None  # None with a production PostgreSQL
    _stopped: bool = field(default=False, repr=False)

    def wait(self) -> int:
        """The exit code of `mlflow server` once it exits; raises UserError, having stopped it, if PostgreSQL dies."""
        while True:
            try:
                return self.process.wait(timeout=WATCH_INTERVAL)
            except subprocess.TimeoutExpired:
                pass
            # Restarting PostgreSQL here would hide a crash loop or a full disk behind a server that seems up;
            # exiting lets the operator, or a supervisor such as systemd's Restart=on-failure, decide.
            if self.postgres is not None and not self.postgres.running():
                self.stop()
                raise UserError(
                    f"The embedded PostgreSQL stopped unexpectedly, so the server stopped too; its log is "
                    f"{self.postgres.log}. Start the same command again."
                )

    def stop(self) -> None:
        """Stop `mlflow server` and its workers, then the embedded PostgreSQL; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            stop_group(self.process)
        finally:
            try:
                if self.postgres is not None:
                    self.postgres.stop()  # pg_ctl stop -m fast: a clean shutdown, the data stays
            finally:
                self.reaper.release()

    def __enter__(self) -> TeamServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start(
    data_dir: str | Path,
    *,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = DEFAULT_WORKERS,
    auth: bool = False,
    webhook_http: bool = False,
    webhook_private: bool = False,
    protected_aliases: Sequence[str] = DEFAULT_PROTECTED_ALIASES,
    announce: Callable[[str], None] = log.warning,
) -> TeamServer:
    """A started team server, answering on its URL; raises UserError (and starts nothing) when it cannot.

    With `auth`, only users with MANAGE on a registered model set or delete its `protected_aliases`.
    `announce` is told about a change to the system (a user created) before it is made. `webhook_http` and
    `webhook_private` let webhooks call plain-http and loopback/private-network receivers.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    _check_inputs(host, port, auth, backend_store_uri)
    artifacts = _make_folders(data_dir, artifacts_destination, embedded=backend_store_uri is None)
    hooks = webhook_env(data_dir, webhook_http, webhook_private)  # made (and refused) before anything starts
    reaper = Reaper.start()
    postgres = None
    try:
        if backend_store_uri is None:
            postgres = start_postgres(data_dir / "postgres", data_dir / "pgpass", announce)
            reaper.watch_postgres(postgres)
            _create_databases(postgres)
        store = _psycopg2(postgres.uri(DATABASE) if postgres else str(backend_store_uri))
        command = [
            *(sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers)),
            *("--backend-store-uri", store, "--serve-artifacts", "--artifacts-destination", artifacts),
        ]
        env = _server_env(postgres)
        env.update(hooks)  # the webhook key: in no argv, log or PostgreSQL's environment (postgres.py's allowlist)
        log_path = data_dir / "mlflow-server.log"
        if auth:
            auth_store = _psycopg2(postgres.uri(AUTH_DATABASE)) if postgres else store
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(data_dir, auth_store))
            env[PROTECTED_ALIASES_VAR] = ",".join(protected_aliases)
            command += ["--app-name", APP_NAME]
            _bootstrap_auth(env, log_path)
        process = _launch(command, env, log_path)
        reaper.watch_group(process.pid)
        url = f"http://{_client_host(host)}:{port}"
        server = TeamServer(url, process, log_path, artifacts, redact_uri(store), reaper, postgres)
    except BaseException:
        try:
            if postgres is not None:
                postgres.stop()
        finally:
            reaper.release()
        raise
    try:
        _wait_healthy(server, urlsplit(backend_store_uri).password if backend_store_uri else None)
    except BaseException:
        server.stop()
        raise
    return server


def _check_inputs(host: str, port: int, auth: bool, backend_store_uri: str | None) -> None:
    """Refuse, before anything starts, what would make the start fail."""
    _check_port_free(host, port)
    if auth and not os.environ.get(ADMIN_PASSWORD_VAR):
        raise UserError(
            f"--auth needs the admin password in the environment variable {ADMIN_PASSWORD_VAR} (MLflow creates "
            f"the admin user with it on first start; never put it on the command line): "
            f"read -s {ADMIN_PASSWORD_VAR} && export {ADMIN_PASSWORD_VAR}."
        )
    if backend_store_uri and not backend_store_uri.startswith(("postgresql://", "postgresql+")):
        raise UserError(
            f"--backend-store-uri must be a PostgreSQL URI like postgresql://mlflow@db.internal:5432/mlflow, "
            f"got {redact_uri(backend_store_uri)!r}."
        )


def _make_folders(data_dir: Path, artifacts_destination: str | None, embedded: bool) -> str:
    """Create the data dir (and the artifacts folder in it, unless one was given); returns where artifacts go.

    A new data dir is private: with --auth, artifacts read from the filesystem would bypass the server's
    permissions. As root, PostgreSQL's own user still needs to pass through it to DATA_DIR/postgres.
    """
    data_dir.mkdir(mode=0o711 if os.geteuid() == 0 and embedded else 0o700, parents=True, exist_ok=True)
    if artifacts_destination is not None:
        return artifacts_destination
    (data_dir / "artifacts").mkdir(mode=0o700, exist_ok=True)
    return str(data_dir / "artifacts")


def _server_env(postgres: EmbeddedPostgres | None) -> dict[str, str]:
    """`mlflow server`'s environment: ours, plus where libpq finds the embedded database's password."""
    env = dict(os.environ)
    if postgres is not None:
        env["PGPASSFILE"] = str(postgres.passfile)  # libpq reads the password there: never in a URI or argv
    # MLflow's job runner serves GenAI jobs this project never submits, and costs a process per queue.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # With --auth, CSRF tokens must verify in every worker; a fresh key per start only logs browsers out.
    env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    # `mlflow server` starts uvicorn from PATH: the one next to this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _bootstrap_auth(env: dict[str, str], log_path: Path) -> None:
    """Create the admin before the workers start, as `mlflow server` does only for its own basic-auth app, and
    tell the workers so (each would otherwise migrate and bootstrap the auth database at once)."""
    from mlflow.environment_variables import _MLFLOW_AUTH_ADMIN_BOOTSTRAPPED

    process = _launch([sys.executable, "-m", "sentiment_flow.server.governance"], env, log_path)
    try:
        code = process.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop_group(process)
        code = None
    if code != 0:
        raise UserError(f"The auth database could not be set up: {last_error_line(log_path)}. The log is {log_path}.")
    env[_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED.name] = "true"  # what `mlflow server` sets after its own bootstrap


def _launch(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`mlflow server` in a session of its own, its output appended to `log_path` (owner-only)."""
    with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as log:
        # Its own session: Ctrl-C in the terminal reaches only us, and we stop it and its workers in order.
        # uvicorn and its workers stay in its process group, which the reaper stops if we are killed.
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        # As the server itself will: a port left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc} (another server is using it?). "
                f"Stop that one or choose another port with --port."
            ) from None


def _create_databases(postgres: EmbeddedPostgres) -> None:
    try:
        import psycopg2
    except ImportError:
        postgres.stop()
        raise UserError(
            'The embedded PostgreSQL needs the server extra: pip install -e ".[server]" '
            "(or pass --backend-store-uri postgresql://... of an existing database)."
        ) from None
    connection = psycopg2.connect(postgres.uri(SUPERUSER), passfile=str(postgres.passfile))
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            for database in (DATABASE, AUTH_DATABASE):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{database}"')
    finally:
        connection.close()


def _wait_healthy(server: TeamServer, secret: str | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as reply:  # noqa: S310 - our http:// URL
                if reply.status == 200:
                    return
        except OSError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            last = last_error_line(server.log_path)
            if secret:  # a driver error may quote the URI it was given
                last = last.replace(secret, "***")
            raise UserError(
                f"mlflow server did not start ({'exited' if server.process.poll() is not None else 'no answer'}"
                f"): {last}. The whole log is {server.log_path}."
            )
        time.sleep(0.5)


def _psycopg2(uri: str) -> str:
    """`uri` with the driver the [server] extra installs: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3."""
    return "postgresql+psycopg2://" + uri.removeprefix("postgresql://") if uri.startswith("postgresql://") else uri


def _client_host(host: str) -> str:
    """The host clients should use: a wildcard bind is reached by this machine's name."""
    return socket.gethostname() if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared, not bound
