"""The reaper: a process in its own session that stops `mlflow server` and the embedded PostgreSQL when the
`sentiment-flow server` process dies, however it dies (SIGKILL included)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sentiment_flow.server.postgres import EmbeddedPostgres, start_time

STOP_TIMEOUT = 30.0  # seconds a stopped process gets before SIGKILL
# Environment variables the reaper must not inherit: it needs no secret.
ADMIN_PASSWORD_VAR = "MLFLOW_AUTH_ADMIN_PASSWORD"  # noqa: S105 - a variable's name; read by MLflow's auth app when it creates the admin


REAPER = "import sys; sys.path[:0] = [{path!r}]; from sentiment_flow.server.reaper import reap; reap()"


@dataclass
class Reaper:
    """A process in its own session that stops what it was told about when our end of its pipe closes.

    The kernel closes the pipe however we die (SIGKILL included); PR_SET_PDEATHSIG would reach only direct
    children, and `mlflow server` starts uvicorn, which starts the workers.
    """

    process: subprocess.Popen
    pipe: int

    @classmethod
    def start(cls) -> Reaper:
        read_end, write_end = os.pipe()  # not inheritable: no other child holds the write end open
        env = {key: value for key, value in os.environ.items() if key != ADMIN_PASSWORD_VAR}
        package_root = str(Path(__file__).resolve().parents[2])
        process = subprocess.Popen(
            [sys.executable, "-c", REAPER.format(path=package_root)],
            stdin=read_end,
            env=env,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(read_end)
        return cls(process, write_end)

    def _say(self, line: str) -> None:
        os.write(self.pipe, f"{line}\n".encode())

    def watch_group(self, pgid: int) -> None:
        self._say(f"group {pgid}")

    def watch_postgres(self, postgres: EmbeddedPostgres) -> None:
        self._say(f"postmaster {postgres.pid} {postgres.started}")
        if postgres.socket_dir != postgres.pgdata:
            self._say(f"remove {postgres.socket_dir}")

    def release(self) -> None:
        """We stopped everything ourselves: the reaper exits without touching anything."""
        try:
            self._say("done")
        except OSError:
            pass  # it died already
        os.close(self.pipe)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def reap() -> None:
    """The reaper's body: read orders until EOF, then stop the process group, PostgreSQL and remove folders."""
    groups: list[str] = []
    postmasters: list[str] = []
    folders: list[str] = []
    for line in sys.stdin:
        verb, _, argument = line.strip().partition(" ")
        if verb == "done":
            return
        {"group": groups, "postmaster": postmasters, "remove": folders}[verb].append(argument)
    for pgid in map(int, groups):
        _stop_until_gone(
            lambda sig, pgid=pgid: os.killpg(pgid, sig), lambda pgid=pgid: _group_alive(pgid), signal.SIGTERM
        )
    for pid, started in (entry.split() for entry in postmasters):
        alive = lambda pid=int(pid), started=started: (
            start_time(pid) == started
        )  # the same start time: not a reused pid
        if alive():
            # SIGINT is PostgreSQL's fast shutdown: clients disconnected, data kept.
            _stop_until_gone(lambda sig, pid=int(pid): os.kill(pid, sig), alive, signal.SIGINT)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _stop_until_gone(send, alive, first_signal: int) -> None:
    """Send `first_signal`, wait until `alive()` is false, SIGKILL after STOP_TIMEOUT."""
    try:
        send(first_signal)
        deadline = time.monotonic() + STOP_TIMEOUT
        while alive():
            if time.monotonic() > deadline:
                send(signal.SIGKILL)
                return
            time.sleep(0.2)
    except ProcessLookupError:
        pass  # gone


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in process group `pgid`; zombies wait for whoever reaps them."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it exited while we looked
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to `mlflow server` and the workers it started (its process group), SIGKILL if they linger."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # the whole group has exited already
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
