"""The team server's registry webhooks: the key that encrypts their secrets, `sentiment-flow webhook`, and the
example receiver (examples/webhook_receiver.py) hearing promote and rollback from a real server.

The end-to-end tests share one `sentiment-flow server --auth --webhook-allow-http --webhook-allow-private-ips`
on pgserver's PostgreSQL (`hooked_team`), started as a subprocess as an admin would; `Receiver` runs the example
receiver as a subprocess and reads what it verified or refused. Both are meant for reuse (approve's events).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from cryptography.fernet import Fernet
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_WEBHOOK_REQUEST_TIMEOUT
from mlflow.webhooks.delivery import _generate_hmac_signature

from sentiment_flow.errors import UserError
from sentiment_flow.server import webhooks
from sentiment_flow.server.reaper import ADMIN_PASSWORD_VAR
from sentiment_flow.server.users import NEW_PASSWORD_VAR
from sentiment_flow.serving import webhook as serve_webhook

from conftest import REPO_ROOT, free_port, http_process
from test_server import ADMIN, PASSWORD, log_in, run_cli

RECEIVER = REPO_ROOT / "examples" / "webhook_receiver.py"
SECRET = f"hook-{uuid.uuid4().hex}"  # the sentinel secret: it must appear in no output or log
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
NAME = "hooks-english"
CACHE_TTL = "1"  # seconds; MLflow's default (60) is how long a worker takes to see a new webhook


def sign(secret: str, body: bytes, delivery_id: str = "d-1", timestamp: str | None = None) -> dict[str, str]:
    """The headers MLflow's own delivery code sends for `body` (its signing function, not a copy of it)."""
    timestamp = timestamp or str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, timestamp, body.decode()),
    }


def one_line_error(output: str) -> str:
    errors = [line for line in output.strip().splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and output.strip().endswith(errors[0]) and "Traceback" not in output, output
    return errors[0]


# ---------------------------------------------------------------------------------------------------------
# The encryption key


def test_the_encryption_key_is_made_once_owner_only_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(webhooks.KEY_VAR, raising=False)
    key = webhooks.encryption_key(tmp_path)
    path = tmp_path / webhooks.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(key.encode())  # a valid Fernet key, as MLflow's EncryptedString needs
    assert webhooks.encryption_key(tmp_path) == key  # a restart keeps the webhooks' secrets readable
    assert [p.name for p in tmp_path.iterdir()] == [webhooks.KEY_FILE]  # no temporary file left


def test_servers_starting_at_once_on_one_data_dir_all_get_the_same_whole_key(tmp_path, monkeypatch):
    monkeypatch.delenv(webhooks.KEY_VAR, raising=False)
    keys, errors = [], []
    barrier = threading.Barrier(8)

    def start():
        barrier.wait()
        try:
            keys.append(webhooks.encryption_key(tmp_path))
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(keys) == 8 and len(set(keys)) == 1


def test_a_key_file_others_can_read_is_refused_without_showing_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv(webhooks.KEY_VAR, raising=False)
    key = webhooks.encryption_key(tmp_path)
    (tmp_path / webhooks.KEY_FILE).chmod(0o644)
    with pytest.raises(UserError) as refused:
        webhooks.encryption_key(tmp_path)
    assert f"chmod 600 {tmp_path / webhooks.KEY_FILE}" in str(refused.value) and key not in str(refused.value)


def test_a_key_in_the_environment_wins_and_a_broken_one_is_refused_without_echoing_it(tmp_path, monkeypatch):
    given = Fernet.generate_key().decode()
    monkeypatch.setenv(webhooks.KEY_VAR, given)
    assert webhooks.encryption_key(tmp_path) == given and not (tmp_path / webhooks.KEY_FILE).exists()
    monkeypatch.setenv(webhooks.KEY_VAR, "not-a-key-sentinel")
    with pytest.raises(UserError) as refused:
        webhooks.encryption_key(tmp_path)
    assert webhooks.KEY_VAR in str(refused.value) and "not-a-key-sentinel" not in str(refused.value)


def test_http_and_private_receivers_are_refused_unless_the_admin_allows_them(tmp_path, monkeypatch):
    monkeypatch.delenv(webhooks.KEY_VAR, raising=False)
    default = webhooks.server_env(tmp_path)
    assert default[webhooks.SCHEMES_VAR] == "https" and default[webhooks.PRIVATE_VAR] == "false"
    allowed = webhooks.server_env(tmp_path, allow_http=True, allow_private=True)
    assert allowed[webhooks.SCHEMES_VAR] == "http,https" and allowed[webhooks.PRIVATE_VAR] == "true"
    assert default[webhooks.KEY_VAR] == allowed[webhooks.KEY_VAR]
    # The names are MLflow's own: what its URL check reads.
    from mlflow.environment_variables import _MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS, _MLFLOW_WEBHOOK_ALLOWED_SCHEMES

    assert (_MLFLOW_WEBHOOK_ALLOWED_SCHEMES.name, _MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS.name) == (
        webhooks.SCHEMES_VAR,
        webhooks.PRIVATE_VAR,
    )


# ---------------------------------------------------------------------------------------------------------
# The example receiver


def load_receiver():
    """examples/webhook_receiver.py as a module: an example file, not part of the package."""
    spec = importlib.util.spec_from_file_location("webhook_receiver", RECEIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_receiver_accepts_mlflows_signature_and_refuses_another_secret_a_stale_or_unsigned_one():
    receiver = load_receiver()
    body = json.dumps({"entity": "model_version_alias", "action": "created", "data": {"alias": "champion"}}).encode()
    assert receiver.verify(SECRET, sign(SECRET, body), body) is None
    assert "bad signature" in receiver.verify("another-secret-0123456789", sign(SECRET, body), body)
    assert "bad signature" in receiver.verify(SECRET, sign(SECRET, body), body.replace(b"champion", b"challenger"))
    stale = sign(SECRET, body, timestamp=str(int(time.time()) - receiver.MAX_AGE - 5))
    assert "timestamp" in receiver.verify(SECRET, stale, body)
    assert "unsigned" in receiver.verify(SECRET, {"Content-Type": "application/json"}, body)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as refused:
        return refused.code


def test_the_receiver_answers_401_to_a_wrong_signature_or_a_replay_and_prints_only_verified_events(capsys):
    receiver = load_receiver()
    server = receiver.make_server(SECRET)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = json.dumps({"entity": "model_version", "action": "created", "data": {"version": "3"}}).encode()
        assert post(url, body, sign("wrong-secret-0123456789", body, "d-1")) == 401
        assert post(url, body, sign(SECRET, body, "d-2")) == 200
        assert post(url, body, sign(SECRET, body, "d-2")) == 401  # the same delivery again
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr()
    assert [json.loads(line)["data"] for line in out.out.splitlines()] == [{"version": "3"}]
    assert "bad signature" in out.err and "received before" in out.err


def test_serves_webhook_route_wakes_the_follower_only_for_a_verified_move_of_its_alias():
    woken = []
    handle = serve_webhook.handler(SECRET, NAME, "champion", lambda: woken.append(1))

    def event(name: str, alias: str) -> bytes:
        return json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": name, "alias": alias, "version": "2"},
            }
        ).encode()

    body = event(NAME, "champion")
    assert handle(body, sign("wrong-secret-0123456789", body)) == (401, "bad signature") and woken == []
    assert handle(body, {}) == (401, "unsigned") and woken == []
    stale = sign(SECRET, body, timestamp=str(int(time.time()) - serve_webhook.MAX_AGE - 5))
    assert handle(body, stale) == (401, "stale timestamp") and woken == []
    for other in (event("other-model", "champion"), event(NAME, "challenger")):
        assert handle(other, sign(SECRET, other)) == (200, "not the followed alias") and woken == []
    assert handle(body, sign(SECRET, body)) == (200, "checking") and woken == [1]


# ---------------------------------------------------------------------------------------------------------
# The command, before it reaches a server


def test_an_unknown_event_is_refused_in_one_line_listing_the_valid_ones(monkeypatch):
    monkeypatch.setenv(webhooks.SECRET_VAR, SECRET)
    code, output = run_cli("webhook", "add", "https://hooks.example.com/x", "--event", "model_version_alias.moved")
    line = one_line_error(output)
    assert code == 2 and "'model_version_alias.moved'" in line
    assert all(event in line for event in (*ALIAS_EVENTS, "model_version.created")) and "prompt" not in line


def test_webhooks_on_a_local_store_are_refused_naming_the_team_server(monkeypatch):
    monkeypatch.setenv(webhooks.SECRET_VAR, SECRET)
    for args in (("add", "https://hooks.example.com/x", "--event", ALIAS_EVENTS[0]), ("list",), ("remove", "x")):
        code, output = run_cli("webhook", *args)
        assert code == 2 and "Webhooks need the team server" in one_line_error(output) and "sqlite:///" in output


def test_the_secret_comes_from_the_environment_never_argv_and_must_be_long(monkeypatch):
    monkeypatch.delenv(webhooks.SECRET_VAR, raising=False)
    unreachable = f"http://127.0.0.1:{free_port()}"  # each case is refused before any request
    monkeypatch.setenv("MLFLOW_TRACKING_URI", unreachable)
    mlflow.set_tracking_uri(unreachable)
    code, output = run_cli("webhook", "add", "https://hooks.example.com/x", "--event", ALIAS_EVENTS[0])
    assert code == 2 and webhooks.SECRET_VAR in one_line_error(output)  # CliRunner's stdin is no terminal
    code, output = run_cli("webhook", "add", "https://h.example.com/x", "--event", ALIAS_EVENTS[0], "--secret", "s")
    assert code == 2 and "No such option '--secret'" in output
    monkeypatch.setenv(webhooks.SECRET_VAR, "short-sentinel")
    code, output = run_cli("webhook", "add", "https://hooks.example.com/x", "--event", ALIAS_EVENTS[0])
    assert code == 2 and "at least 16 characters" in one_line_error(output) and "short-sentinel" not in output


@pytest.mark.parametrize("command", [(), ("add",), ("list",), ("test",), ("remove",)])
def test_every_webhook_command_has_help(command):
    code, output = run_cli("webhook", *command, "--help")
    assert code == 0 and "Usage: cli webhook" in output and len(output.splitlines()) > 4


# ---------------------------------------------------------------------------------------------------------
# End to end, on the team server


class Receiver:
    """examples/webhook_receiver.py as a subprocess with `secret`, on a free port; `events()` is what it verified."""

    def __init__(self, root: Path, secret: str):
        self.out, self.err = (
            root / f"receiver-{uuid.uuid4().hex[:6]}.out",
            root / f"receiver-{uuid.uuid4().hex[:6]}.err",
        )
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(RECEIVER), "--port", "0"],
                env={**os.environ, "WEBHOOK_SECRET": secret},
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + 30
        while "listening on " not in self.err.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.err.read_text()
            time.sleep(0.1)
        self.url = self.err.read_text().split("listening on ", 1)[1].split()[0]

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def refusals(self) -> list[str]:
        return [line for line in self.err.read_text().splitlines() if line.startswith("refused")]

    def wait_for(self, count: int, read=None, timeout: float = 60) -> list:
        """`read()` (default: events) once it holds `count` items; fails the test after `timeout` seconds."""
        read = read or self.events
        deadline = time.monotonic() + timeout
        while len(read()) < count:
            assert time.monotonic() < deadline, (read(), self.err.read_text())
            time.sleep(0.2)
        return read()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class HookedTeam:
    root: Path
    data_dir: Path
    port: int
    runs: contextlib.ExitStack  # the running `sentiment-flow server`: closing it sends SIGTERM
    outputs: list[Path]  # what each start of `sentiment-flow server` printed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def key(self) -> str:
        return (self.data_dir / webhooks.KEY_FILE).read_text().strip()

    def start(self) -> None:
        """`sentiment-flow server --auth` allowing http and loopback receivers, as an admin runs it."""
        command = [
            *(str(Path(sys.executable).parent / "sentiment-flow"), "server", "--data-dir", str(self.data_dir)),
            *("--port", str(self.port), "--workers", "2", "--auth"),
            *("--webhook-allow-http", "--webhook-allow-private-ips"),
        ]
        self.outputs.append(self.root / f"server-{len(self.outputs)}.out")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(ADMIN_PASSWORD_VAR, PASSWORD)
            mp.setenv("MLFLOW_WEBHOOK_CACHE_TTL", CACHE_TTL)
            mp.delenv(webhooks.KEY_VAR, raising=False)
            self.runs.enter_context(http_process(command, self.url, "/health", self.outputs[-1], timeout=240))

    def restart(self) -> None:
        self.runs.close()
        self.start()


@pytest.fixture(scope="module")
def hooked_team():
    """A HookedTeam, started; stopped (with its PostgreSQL) however the module ends."""
    pytest.importorskip("pgserver", reason='the [server] extra is not installed: pip install -e ".[server]"')
    # As root PostgreSQL runs as another user, which must pass through: pytest's tmp folders are closed.
    root = Path(tempfile.mkdtemp(prefix="sf-hooks-", dir="/tmp"))
    root.chmod(0o711)
    team = HookedTeam(root, root / "data", free_port(), contextlib.ExitStack(), [])
    try:
        team.start()
        yield team
    finally:
        team.runs.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hooked_admin(hooked_team, monkeypatch):
    log_in(monkeypatch, hooked_team, ADMIN, PASSWORD)
    monkeypatch.setenv(webhooks.SECRET_VAR, SECRET)
    return hooked_team


@pytest.fixture
def receivers(hooked_team):
    """Factory: a started Receiver with a secret (default SECRET); all stopped after the test."""
    started = []

    def start(secret: str = SECRET) -> Receiver:
        started.append(Receiver(hooked_team.root, secret))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


def add_webhook(url: str, *events: str) -> str:
    """The id of a webhook added with `sentiment-flow webhook add` (signing with SENTIMENT_FLOW_WEBHOOK_SECRET)."""
    code, output = run_cli("webhook", "add", url, *(arg for event in events for arg in ("--event", event)))
    assert code == 0 and "Added webhook " in output and SECRET not in output, output
    return output.split("Added webhook ", 1)[1].split()[0]


def alias_moves(receiver: Receiver, count: int) -> list[tuple[str, str, str, str]]:
    """(event, model, alias, version) of the first `count` alias events `receiver` verified, in arrival order (a
    deleted alias's event names no version: "")."""
    events = receiver.wait_for(count)
    return [
        (f"{e['entity']}.{e['action']}", e["data"]["name"], e["data"]["alias"], e["data"].get("version", ""))
        for e in events
    ]


@pytest.mark.slow
def test_promote_and_rollback_reach_a_verifying_receiver_and_a_dead_or_wrong_one_fails_nothing(
    hooked_admin, receivers, register_tiny_model
):
    good, wrong = receivers(), receivers(secret=f"other-{uuid.uuid4().hex}")
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    hanging = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers: the server times out
    for url in (good.url, wrong.url, dead, f"http://127.0.0.1:{hanging.getsockname()[1]}/hook"):
        add_webhook(url, *ALIAS_EVENTS)
    v1 = register_tiny_model(NAME, test_f1_macro=0.7)
    v2 = register_tiny_model(NAME, test_f1_macro=0.8)
    time.sleep(float(CACHE_TTL) + 0.5)  # each worker sees the new webhooks once its cached list expires

    started = time.monotonic()
    code, output = run_cli("promote", NAME, "--version", v1, "--alias", "champion")
    first_promotion = time.monotonic() - started
    assert code == 0, output
    # Waiting for the hanging receiver would take MLflow's request timeout (30 s) per try.
    assert first_promotion < MLFLOW_WEBHOOK_REQUEST_TIMEOUT.get() * 0.8, first_promotion
    code, output = run_cli("promote", NAME, "--version", v2, "--alias", "champion")
    assert code == 0 and "now points at version 2" in output, output
    code, output = run_cli("rollback", NAME)
    assert code == 0 and "rolled back from version 2 to 1" in output, output
    client = MlflowClient()
    client.set_registered_model_alias(NAME, "challenger", v2)
    client.delete_registered_model_alias(NAME, "challenger")

    assert alias_moves(good, 5) == [
        ("model_version_alias.created", NAME, "champion", v1),
        ("model_version_alias.created", NAME, "champion", v2),
        ("model_version_alias.created", NAME, "champion", v1),  # the rollback
        ("model_version_alias.created", NAME, "challenger", v2),
        ("model_version_alias.deleted", NAME, "challenger", ""),
    ]
    assert good.refusals() == []
    assert len(wrong.wait_for(5, wrong.refusals)) >= 5 and wrong.events() == []
    assert all("bad signature" in line for line in wrong.refusals())
    # The dead receiver cost the promotions nothing: delivery runs in the server's threads, after the answer.
    assert client.get_registered_model(NAME).aliases == {"champion": v1}
    hanging.close()
    print(f"first promotion with a dead, a hanging and a refusing receiver: {first_promotion:.1f} s")


@pytest.mark.slow
def test_an_approval_reaches_the_receiver_when_the_approver_moves_the_alias_and_the_request_does_not(
    hooked_admin, receivers, register_tiny_model, monkeypatch
):
    good = receivers()
    add_webhook(good.url, *ALIAS_EVENTS)
    name = f"{NAME}-approved"
    version = register_tiny_model(name, test_f1_macro=0.7)
    passwords = {user: f"{user}-{uuid.uuid4().hex}" for user in ("olga", "arne")}
    for user, role in (("olga", "ops"), ("arne", "approver")):
        monkeypatch.setenv(NEW_PASSWORD_VAR, passwords[user])
        code, output = run_cli("add-user", user, "--role", role)
        assert code == 0, output
    time.sleep(float(CACHE_TTL) + 0.5)

    log_in(monkeypatch, hooked_admin, "olga", passwords["olga"])
    code, output = run_cli("promote", name, "--version", version, "--alias", "champion")
    assert code == 0 and "Approval requested" in output, output
    log_in(monkeypatch, hooked_admin, "arne", passwords["arne"])
    code, output = run_cli("approve", name, "--version", version, "--alias", "champion")
    assert code == 0 and f"now points at version {version}" in output, output

    # One alias event, the approver's: the request wrote tags only. (A second delivery would have 2 s to arrive.)
    assert alias_moves(good, 1) == [("model_version_alias.created", name, "champion", version)]
    time.sleep(2)
    assert len(good.events()) == 1 and good.refusals() == []


@pytest.mark.slow
def test_webhook_list_test_and_remove_and_no_secret_or_key_is_shown(hooked_admin, receivers):
    team = hooked_admin
    good, wrong = receivers(), receivers(secret=f"other-{uuid.uuid4().hex}")
    good_id, wrong_id = add_webhook(good.url, "model_version.created"), add_webhook(wrong.url, ALIAS_EVENTS[0])

    code, output = run_cli("webhook", "list")
    assert code == 0 and good_id in output and wrong_id in output and good.url in output, output
    assert "model_version.created" in output and SECRET not in output

    code, output = run_cli("webhook", "test", good_id)
    assert code == 0 and "answered HTTP 200" in output, output
    assert [event["entity"] for event in good.wait_for(1)] == ["model_version"]  # MLflow's example payload, verified
    code, output = run_cli("webhook", "test", wrong_id)
    assert code == 1 and "answered HTTP 401" in one_line_error(output) and "same secret" in output, output

    code, output = run_cli("webhook", "remove", wrong_id)
    assert code == 0 and f"Removed webhook {wrong_id}" in output, output
    code, output = run_cli("webhook", "list")
    assert wrong_id not in output and good_id in output
    code, output = run_cli("webhook", "remove", wrong_id)
    assert code == 2 and wrong_id in one_line_error(output), output
    code, output = run_cli("webhook", "add", "ftp://127.0.0.1/x", "--event", ALIAS_EVENTS[0])
    assert code == 2 and "scheme" in one_line_error(output), output

    # The key: 0600 in the data dir; in mlflow server's environment, and in no argv, output, log or PostgreSQL's.
    key_file = team.data_dir / webhooks.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = team.key()
    for path in (*team.outputs, team.data_dir / "mlflow-server.log", team.data_dir / "postgres" / "log"):
        text = path.read_text(errors="replace")
        assert key not in text and SECRET not in text, path
    environments = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                assert key.encode() not in cmdline and SECRET.encode() not in cmdline
                environments[proc.name] = (cmdline, (proc / "environ").read_bytes())
    postmaster = (team.data_dir / "postgres" / "postmaster.pid").read_text().split()[0]
    assert key.encode() not in environments[postmaster][1]
    servers = [
        env
        for cmdline, env in environments.values()
        if b"mlflow\0server" in cmdline and str(team.data_dir).encode() in cmdline
    ]
    assert servers and all(f"{webhooks.KEY_VAR}={key}".encode() in env for env in servers)
    assert webhooks.KEY_VAR not in os.environ


@pytest.mark.slow
def test_a_user_who_is_not_admin_is_told_only_an_admin_manages_webhooks(hooked_admin, monkeypatch):
    password = f"plain-{uuid.uuid4().hex}"
    import requests  # MLflow's users API as its own client calls it (get_app_client imports deprecated starlette)

    created = requests.post(
        f"{hooked_admin.url}/api/2.0/mlflow/users/create",
        json={"username": "carol", "password": password},
        auth=(ADMIN, PASSWORD),
        timeout=30,
    )
    assert created.status_code == 200, created.text
    log_in(monkeypatch, hooked_admin, "carol", password)
    code, output = run_cli("webhook", "list")
    line = one_line_error(output)
    assert (
        code == 2 and "user 'carol' is not an admin of the server" in line and "only an admin manages webhooks" in line
    )
    assert mlflow.get_tracking_uri() == hooked_admin.url


@pytest.mark.slow
def test_after_a_restart_the_server_still_signs_with_the_secrets_it_stored(hooked_admin, receivers):
    """The key is reused: without it each start invents one, and every webhook request answers 500 after."""
    team = hooked_admin
    key = team.key()
    good = receivers()
    hook_id = add_webhook(good.url, "model_version.created")
    team.restart()
    assert team.key() == key
    code, output = run_cli("webhook", "test", hook_id)
    assert code == 0 and "answered HTTP 200" in output, output
    assert [event["entity"] for event in good.wait_for(1)] == ["model_version"]
    assert all(key not in path.read_text() for path in team.outputs)


@pytest.mark.slow
def test_serve_follows_a_promotion_at_once_when_the_server_sends_it_a_signed_webhook(
    hooked_admin, register_tiny_model, monkeypatch
):
    """`serve` polls the alias only hourly here: the version it answers with changes within seconds of the
    promotion only because the webhook woke it."""
    wake_name = "wake-english"
    v1 = register_tiny_model(wake_name, test_f1_macro=0.7)
    v2 = register_tiny_model(wake_name, test_f1_macro=0.8)
    assert run_cli("promote", wake_name, "--version", v1, "--alias", "champion")[0] == 0
    monkeypatch.setenv(serve_webhook.SECRET_VAR, SECRET)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "sentiment-flow"), "-v", "serve", f"models:/{wake_name}@champion"]
    log = hooked_admin.root / "serve.log"
    with http_process([*command, "--port", str(port), "--poll-seconds", "3600"], url, "/ping", log):

        def serving() -> str:
            with urllib.request.urlopen(f"{url}/ping", timeout=10) as reply:
                return reply.headers["X-Model-Version"]

        assert serving() == f"{wake_name}/{v1}"
        add_webhook(f"{url}{serve_webhook.WEBHOOK_PATH}", ALIAS_EVENTS[0])
        body = b'{"entity": "model_version_alias", "action": "created", "data": {}}'
        assert post(f"{url}{serve_webhook.WEBHOOK_PATH}", body, sign("wrong-secret-0123456789", body)) == 401
        time.sleep(float(CACHE_TTL) + 0.5)
        promoted = time.monotonic()
        assert run_cli("promote", wake_name, "--version", v2, "--alias", "champion")[0] == 0
        deadline = time.monotonic() + 120
        while serving() != f"{wake_name}/{v2}":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        print(f"serve answered with the promoted version {time.monotonic() - promoted:.1f} s after promote began")
    assert "Registry webhook: wake-english@champion moved" in log.read_text()
    assert SECRET not in log.read_text()
