"""Users of the team server (`--auth`): roles as data, adding a user with one, and what a refused request lacked.

A role is MLflow permissions on the team's experiments and on registered models: ROLES, the one table, so a
new role is one entry. `add_user` makes each role an MLflow role of the server (MLflow's own RBAC, named
`sentiment-flow-<role>`, visible in its UI) holding those grants, creates the user and assigns the role.
Roles are team-wide: an experiment added to a role is added for every user who has it.

With `default_permission = READ` a user with no role reads everything and writes nothing but experiments they
create (MLflow grants a creator MANAGE on it). Writing a run into the Default experiment, where `mlflow run .`
and `train` record, or a version of a model someone else created, takes EDIT. The governance app
(governance.py) adds: a new registered model takes a role's EDIT on registered models (ops, approver), and a
protected alias (champion) takes MANAGE on the model (approver).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sentiment_flow.errors import UserError, one_line

log = logging.getLogger(__name__)

EXPERIMENT, REGISTERED_MODEL = "experiment", "registered_model"  # MLflow's resource types (auth.permissions)
EVERY = "*"  # MLflow's pattern for every resource of a type, including ones created later
# MLflow's permissions, weakest first: what a grant of one allows is everything before it, too.
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE")
ROLE_PREFIX = "sentiment-flow-"  # an MLflow role `sentiment-flow-ops` is this project's role `ops`
WORKSPACE = "default"  # MLflow's only workspace unless the server enables workspaces
# The experiments the documented commands (docs/) write to, besides any the admin names with --experiment: `mlflow run .`,
# `train` and `optimize` record in Default (unless MLFLOW_EXPERIMENT_NAME says otherwise), `score` in
# config.SCORING_EXPERIMENT and `promote` its evaluations in registry.evaluations.EXPERIMENT.
DEFAULT_EXPERIMENT = "Default"
NEW_PASSWORD_VAR = "SENTIMENT_FLOW_NEW_USER_PASSWORD"  # noqa: S105 - a variable's name; `add-user` reads a new user's password here, else prompts

# The governance app (governance.py) inside `sentiment-flow server --auth`; its constants live here, where
# clients read them without importing the server.
PROTECTED_ALIASES_VAR = "SENTIMENT_FLOW_PROTECTED_ALIASES"  # the server's protected aliases, comma-separated
# Registered-model tags the server keeps honest: registry.audit's records (AUDIT_PREFIX + ".") and pending
# approval requests. INT8_SUFFIX is int8.build's (importing that loads torch, too heavy for the server);
# tests pin both copies to their owners'.
AUDIT_TAG_PREFIX, APPROVAL_TAG_PREFIX = "audit.", "approval."
INT8_SUFFIX = "-int8"


@dataclass(frozen=True)
class Role:
    """What a role may do, and its permission on each resource type (on the team's experiments; on every
    registered model)."""

    description: str
    permissions: dict[str, str]


ROLES = {
    "viewer": Role(
        "reads the team's runs, models and aliases (status, mlflow models serve); writes nothing",
        {EXPERIMENT: "READ", REGISTERED_MODEL: "READ"},
    ),
    "ops": Role(
        "runs the documented commands: train (mlflow run .), score, optimize, copy, registers new models, "
        "promotes to unprotected aliases (challenger) and requests approval for protected ones (champion)",
        {EXPERIMENT: "EDIT", REGISTERED_MODEL: "EDIT"},
    ),
    "approver": Role(
        "what ops does, plus MANAGE on every registered model: sets and deletes protected aliases (champion), "
        "approves others' requests, rolls back",
        {EXPERIMENT: "EDIT", REGISTERED_MODEL: "MANAGE"},
    ),
}


@dataclass(frozen=True)
class AddedUser:
    """What `add_user` did: whether it created the user, the MLflow role it assigned and that role's grants."""

    username: str
    created: bool  # False: the user existed, and keeps its password
    role: str  # the MLflow role's name
    experiments: dict[str, str]  # name -> id of each experiment the role's experiment grant covers
    permissions: dict[str, str]  # resource type -> permission


def team_experiments(extra: Iterable[str] = ()) -> list[str]:
    """The experiments a role covers: the documented commands' (see DEFAULT_EXPERIMENT) and `extra`, in order, once."""
    from sentiment_flow.config import SCORING_EXPERIMENT
    from sentiment_flow.registry.evaluations import EXPERIMENT as EVALUATIONS_EXPERIMENT

    return list(dict.fromkeys([DEFAULT_EXPERIMENT, SCORING_EXPERIMENT, EVALUATIONS_EXPERIMENT, *extra]))


def add_user(username: str, role: str, password: Callable[[], str], experiments: Iterable[str] = ()) -> AddedUser:
    """Create `username` (with `password()`, asked only for a new user) on the tracking server and give it `role`.

    Run as the server's admin (MLFLOW_TRACKING_USERNAME/PASSWORD). Creates the team experiments that are
    missing and the MLflow role with ROLES[role]'s grants; safe to run again (for an existing user it only
    adds the role). Raises UserError, having changed nothing, for a bad role, password or tracking URI.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client
    from mlflow.utils.validation import _validate_password

    from sentiment_flow.store import experiment_id

    if role not in ROLES:
        raise UserError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}.")
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        raise UserError(
            f"add-user adds a user to a team server: set MLFLOW_TRACKING_URI to its URL (http://...), and "
            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to its admin; it is {uri!r}."
        )
    client = get_app_client("basic-auth", tracking_uri=uri)
    try:
        client.get_user(username)
        new_password = None
    except MlflowException as exc:
        if exc.error_code == "ENDPOINT_NOT_FOUND" or "error code 404" in str(exc):
            raise UserError(
                f"The server at {uri} has no users: it runs without authentication. Start it with "
                f"`sentiment-flow server --auth`."
            ) from None
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        new_password = password()
        try:
            _validate_password(new_password)  # the server's own policy, checked before anything changes
        except MlflowException as invalid:
            raise UserError(f"The password for {username!r} is refused: {one_line(invalid)}.") from None

    ids = {name: experiment_id(name) for name in team_experiments(experiments)}
    granted = ROLES[role].permissions
    wanted = {(EXPERIMENT, ids[name]): granted[EXPERIMENT] for name in ids}
    wanted[(REGISTERED_MODEL, EVERY)] = granted[REGISTERED_MODEL]
    mlflow_role = _ensure_role(client, ROLE_PREFIX + role, ROLES[role].description, wanted)
    if new_password is not None:
        client.create_user(username, new_password)
    if mlflow_role.id not in {assigned.id for assigned in client.list_user_roles(username)}:
        client.assign_role(username, mlflow_role.id)
    return AddedUser(username, new_password is not None, mlflow_role.name, ids, dict(granted))


def _ensure_role(client, name: str, description: str, wanted: dict[tuple[str, str], str]):
    """The MLflow role `name`, created if missing, holding each (resource type, pattern) -> permission of
    `wanted` (its other grants are kept)."""
    role = next((r for r in client.list_roles(WORKSPACE) if r.name == name), None)
    if role is None:
        role = client.create_role(WORKSPACE, name, description)
    held = {(p.resource_type, p.resource_pattern): p for p in client.list_role_permissions(role.id)}
    for (resource_type, pattern), permission in wanted.items():
        existing = held.get((resource_type, pattern))
        if existing is None:
            client.add_role_permission(role.id, resource_type, pattern, permission)
        elif existing.permission != permission:
            client.update_role_permission(existing.id, permission)
    return role


AUTH_CACHE_TTL_SECONDS = 60  # with --auth: credentials checked once a minute per worker, not on every request


def write_auth_config(data_dir: Path, database_uri: str) -> Path:
    """basic_auth.ini for MLflow's auth app; no password in it (MLflow reads the admin's from the environment)."""
    path = data_dir / "basic_auth.ini"
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri.replace('%', '%%')}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without it every request pays a PBKDF2 password check (about 1 s per request with 8 promotions
        # polling at once on 2 cores). A changed password may still be accepted by other workers for this long.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_SECONDS}\n"
    )
    # Owner-only: a production database URI may carry the database user's password.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path
