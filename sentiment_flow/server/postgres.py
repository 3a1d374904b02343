"""The embedded PostgreSQL of the team server, driven through the binaries of the `pgserver` wheel.

pgserver's Python API is not used: as root it opens every parent of the data dir to all users, initdbs with
trust authentication and moves a socket whose path is too long to a world-writable /tmp directory. Here the
cluster has password authentication only (scram-sha-256, the password in a 0600 libpq passfile), listens on
no TCP port, keeps its socket in a folder only its own user may enter, and runs with an environment that
holds no secret. As root it runs as SERVICE_USER and changes no permission outside its data dir.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sentiment_flow.errors import UserError

log = logging.getLogger(__name__)

SERVICE_USER = (
    "pgserver"  # runs PostgreSQL when started as root (it refuses root); pgserver's name, so its data dirs stay usable
)
SUPERUSER = "postgres"  # the database role everything connects as
SOCKET_NAME = ".s.PGSQL.5432"  # PostgreSQL's socket file; the port only names it, no TCP port is opened
SOCKET_PATH_MAX = 107  # bytes in a unix socket path: sun_path is 108 with the terminating NUL
TIMEOUT = 180.0  # seconds for initdb, a start or a stop, on a busy host


@dataclass
class EmbeddedPostgres:
    """A running PostgreSQL on a private unix socket, with password authentication for its one role."""

    pgdata: Path
    socket_dir: Path  # PGDATA itself when the socket path fits, else a private directory under /tmp
    passfile: Path  # libpq passfile (mode 0600, owned by the server's user) with the superuser's password
    pid: int  # the postmaster's
    started: str  # the postmaster's start time in /proc, so a reused pid is not taken for it
    user: pwd.struct_passwd | None  # the system user it runs as when started as root, else None (ours)

    @property
    def log(self) -> Path:
        return self.pgdata / "log"

    def uri(self, database: str) -> str:
        """A libpq URI for `database` on the socket, without a password (libpq takes it from PGPASSFILE)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.socket_dir), safe='/')}"

    def running(self) -> bool:
        """Whether the postmaster still runs."""
        return start_time(self.pid) == self.started

    def stop(self) -> None:
        """pg_ctl stop -m fast (the data stays), then remove a socket directory made for this run."""
        try:
            _pg_run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], self.user)
        except UserError:
            pass  # it is not running (it died, or was stopped already)
        if self.socket_dir != self.pgdata:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


def start_postgres(pgdata: Path, passfile: Path, announce: Callable[[str], None] = log.warning) -> EmbeddedPostgres:
    """PostgreSQL started on `pgdata` (initialized on first use), reachable by this process's user only.

    As root it runs as SERVICE_USER, created with useradd if missing (`announce` is told first); raises
    UserError, changing no permission, when that user cannot reach `pgdata` or the binaries.
    """
    bin_dir = _pg_bin()
    user = _ensure_service_user(announce) if os.geteuid() == 0 else None
    if user is not None:
        _check_reachable(user, pgdata.parent, bin_dir)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(pgdata, user.pw_uid, user.pw_gid)
    password = passfile.read_text().rsplit(":", 1)[-1].strip() if passfile.exists() else None
    if not (pgdata / "PG_VERSION").exists():
        # Nobody can log in until the password is set below: initdb's trust default is what the issue exploited.
        _pg_run(["initdb", "-D", str(pgdata), "-U", SUPERUSER, "--auth=reject", "--encoding=UTF8", "--no-locale"], user)
        password = None
    if password is None:  # a new cluster, or one pgserver made with trust authentication
        password = secrets.token_hex(24)
        # Single-user mode opens no socket; the password goes in on stdin, never in argv or the environment.
        _pg_run(
            ["postgres", "--single", "-D", str(pgdata), "-F", "postgres"],
            user,
            input=f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n",
        )
        _write_private(passfile, f"*:*:*:{SUPERUSER}:{password}\n")
    hba = pgdata / "pg_hba.conf"
    _write_private(
        hba,
        "# Written by sentiment-flow server on every start: local socket, password only.\n"
        "local all all scram-sha-256\n",
    )
    if user is not None:
        os.chown(hba, user.pw_uid, user.pw_gid)
    socket_dir = pgdata
    if len(os.fsencode(pgdata / SOCKET_NAME)) > SOCKET_PATH_MAX:
        socket_dir = Path(tempfile.mkdtemp(prefix="sentiment-flow-pg-"))  # mode 0700
        if user is not None:
            os.chown(socket_dir, user.pw_uid, user.pw_gid)
    options = ["-h", "", "-k", str(socket_dir), "-c", "unix_socket_permissions=0700"]
    try:
        # pg_ctl passes -o to /bin/sh: quoted. It starts the postmaster in its own session.
        _pg_run(
            [
                "pg_ctl",
                "-D",
                str(pgdata),
                "-l",
                str(pgdata / "log"),
                "-w",
                "-t",
                str(int(TIMEOUT)),
                "-o",
                shlex.join(options),
                "start",
            ],
            user,
        )
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        started = start_time(pid)
        if started is None:  # exited right after starting: the log says why
            raise UserError("the postmaster exited")
    except UserError:
        if socket_dir != pgdata:
            shutil.rmtree(socket_dir, ignore_errors=True)
        raise UserError(
            f"The embedded PostgreSQL did not start: {last_error_line(pgdata / 'log')}. The whole log is "
            f"{pgdata / 'log'}."
        ) from None
    return EmbeddedPostgres(pgdata, socket_dir, passfile, pid, started, user)


def _pg_bin() -> Path:
    """The PostgreSQL binaries of the pgserver wheel, found without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            'The embedded PostgreSQL needs the server extra: pip install -e ".[server]" '
            "(or pass --backend-store-uri postgresql://... of an existing database)."
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _pg_run(args: list[str], user: pwd.struct_passwd | None, input: str | None = None) -> None:
    """Run a PostgreSQL binary as `user` (None: ourselves) with an environment that holds no secret.

    Raises UserError with the first line it printed when it fails.
    """
    env = {key: value for key, value in os.environ.items() if key in ("LANG", "TZ") or key.startswith("LC_")}
    env.update(PATH=os.defpath, HOME=user.pw_dir if user else os.environ.get("HOME", "/"))
    ids: dict[str, Any] = (
        {}
        if user is None
        else {
            "user": user.pw_uid,
            "group": user.pw_gid,
            "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
        }
    )
    with tempfile.TemporaryFile() as errors:
        # Output to files, not pipes: the postmaster pg_ctl starts would inherit a pipe and hold it open.
        try:
            subprocess.run(
                [str(_pg_bin() / args[0]), *args[1:]],
                input=input,
                text=True,
                env=env,
                cwd="/",
                stdout=errors if input is None else subprocess.DEVNULL,
                stderr=errors,
                stdin=None if input is not None else subprocess.DEVNULL,
                check=True,
                timeout=TIMEOUT,
                **ids,
            )
        except subprocess.CalledProcessError:
            errors.seek(0)
            lines = [line for line in errors.read().decode(errors="replace").splitlines() if line.strip()]
            raise UserError(f"PostgreSQL's {args[0]} failed: {(lines or ['no output'])[0].strip()}") from None


def _service_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None


def _useradd_command() -> list[str]:
    # A system user with no login shell and no home: it only owns DATA_DIR/postgres.
    return [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        SERVICE_USER,
    ]


def _ensure_service_user(announce: Callable[[str], None]) -> pwd.struct_passwd:
    user = _service_user()
    if user is None:
        command = _useradd_command()
        announce(
            f"Started as root: PostgreSQL refuses to run as root, so it runs as the system user {SERVICE_USER}, "
            f"created now with: {shlex.join(command)}"
        )
        subprocess.run(command, check=True, capture_output=True)
        user = pwd.getpwnam(SERVICE_USER)
    return user


def _check_reachable(user: pwd.struct_passwd, *folders: Path) -> None:
    """Raise UserError unless `user` may enter each of `folders` (and so all their parents)."""
    ids: dict[str, Any] = {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
    }
    for folder in folders:
        reachable = subprocess.run(["test", "-x", str(folder)], env={"PATH": os.defpath}, cwd="/", check=False, **ids)
        if reachable.returncode != 0:
            raise UserError(
                f"PostgreSQL refuses to run as root, so it runs as the system user {SERVICE_USER}, which cannot "
                f"enter {folder}: one of its parent folders is closed to other users, and the server changes no "
                f"permission outside its data dir. Choose a --data-dir under an open folder (like /srv/mlflow), "
                f"or open the parents yourself (chmod o+x)."
            )


def _write_private(path: Path, text: str) -> None:
    """Write `path` readable by its owner only, from the first byte on."""
    path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def start_time(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat), or None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name in parentheses may hold spaces
    return None if fields[0] == "Z" else fields[19]


def last_error_line(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]
