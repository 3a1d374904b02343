"""The team server's governance app (`mlflow server --app-name sentiment-flow`): MLflow's basic-auth app plus
rules it enforces inside the server, so a raw REST call is held to them as much as the CLI.

- Protected aliases (PROTECTED_ALIASES_VAR, default `champion`): setting or deleting one takes MANAGE on the
  registered model (or an admin); other aliases keep MLflow's own rule (EDIT to set).
- Name creation: a new registered model takes EDIT on registered models as the user's role grants it for a
  name that does not exist yet (ops and approver; a viewer or a user without a role is refused). `NAME-int8`
  also takes EDIT on NAME, and NAME's MANAGE holders get MANAGE on it; so does a copy's new name on the model
  its first version is copied from. Renaming follows the creation rule for the new name, and takes MANAGE on a
  model that holds a protected alias (the alias moves with it).
- The audit trail and approval requests (registered-model tags `audit.*`, `approval.*`): see `_check_tag`.

Permissions are MLflow's own, resolved by its auth app (user grants, RBAC roles, default permission): this
module asks it and adds refusals; the only grants it makes are the int8 variants' and copies' above. A refusal
is MLflow's JSON error, PERMISSION_DENIED (403), with a message that names the rule.
"""

from __future__ import annotations

import json
import logging
import os

from flask import Flask, jsonify, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.protos.model_registry_pb2 import (
    CreateModelVersion,
    CreateRegisteredModel,
    DeleteRegisteredModelAlias,
    DeleteRegisteredModelTag,
    RenameRegisteredModel,
    SetRegisteredModelAlias,
    SetRegisteredModelTag,
)
from mlflow.server import auth
from mlflow.server.auth.permissions import MANAGE
from mlflow.server.handlers import (  # _get_request_message: a request read as MLflow's handler reads it
    _get_model_registry_store,
    _get_paths,
    _get_request_message,
    catch_mlflow_exception,
)

from sentiment_flow.config import DEFAULT_PROTECTED_ALIASES, GOVERNANCE_ENDPOINT
from sentiment_flow.server.users import (
    APPROVAL_TAG_PREFIX,
    AUDIT_TAG_PREFIX,
    INT8_SUFFIX,
    PROTECTED_ALIASES_VAR,
    REGISTERED_MODEL,
)

log = logging.getLogger(__name__)


def _routes(endpoint: str) -> set[str]:
    """The REST and ajax paths MLflow serves `endpoint` (e.g. /mlflow/registered-models/alias) at."""
    return set(_get_paths(endpoint))


ALIAS = _routes("/mlflow/registered-models/alias")  # POST sets, DELETE deletes; GET only reads
SET_TAG = _routes("/mlflow/registered-models/set-tag")
DELETE_TAG = _routes("/mlflow/registered-models/delete-tag")
CREATE = _routes("/mlflow/registered-models/create")
RENAME = _routes("/mlflow/registered-models/rename")
CREATE_VERSION = _routes("/mlflow/model-versions/create")
GOVERNED = ALIAS | SET_TAG | DELETE_TAG | CREATE | RENAME


def protected_aliases() -> tuple[str, ...]:
    """The aliases only MANAGE holders may set or delete, from the server's environment (set by app.start)."""
    configured = os.environ.get(PROTECTED_ALIASES_VAR)
    if configured is None:
        return DEFAULT_PROTECTED_ALIASES
    return tuple(alias for alias in configured.split(",") if alias)


def create_app(app: Flask | None = None):
    """MLflow's basic-auth app (what `--app-name basic-auth` serves) with this module's rules added."""
    if app is None:
        from mlflow.server import app as mlflow_app

        app = mlflow_app
    served = auth.create_app(app)
    # Ours runs first so a refusal names the rule (MLflow's own refusal is a bare "Permission denied"); it
    # only adds refusals, and MLflow's hook still checks every request after it.
    app.before_request_funcs.setdefault(None, []).insert(0, _before_request)
    app.after_request(_after_request)
    for path in _routes(GOVERNANCE_ENDPOINT.removeprefix("/api/2.0")):
        app.add_url_rule(path, "sentiment_flow_governance" + path, _governance, methods=["GET"])
        # MLflow's auth refuses a route without a validator (fail-closed): any logged-in user may read this one.
        auth.BEFORE_REQUEST_VALIDATORS[(path, "GET")] = auth._allow_authenticated
    return served


def _governance():
    """What any authenticated client may read about the rules: the protected aliases."""
    return jsonify({"protected_aliases": list(protected_aliases())})


def _refuse(message: str) -> MlflowException:
    return MlflowException(message, error_code=PERMISSION_DENIED)


@catch_mlflow_exception
def _before_request():
    if request.path not in GOVERNED or request.method not in ("POST", "DELETE"):
        return None
    authorization = auth.authenticate_request()
    if not isinstance(authorization, auth.Authorization):
        return authorization  # MLflow's 401 (its own hook would answer the same)
    username = authorization.username
    if not username:  # an Authorization of another scheme than basic
        return auth.make_basic_auth_response()
    admin = auth.sender_is_admin()
    if request.path in ALIAS:
        deleting = request.method == "DELETE"
        message = _get_request_message(DeleteRegisteredModelAlias() if deleting else SetRegisteredModelAlias())
        if not admin and message.alias in protected_aliases():
            permission = _permission(username, message.name)
            if not permission.can_manage:
                raise _refuse(
                    f"Alias {message.alias!r} of registered model {message.name!r} is protected: "
                    f"{'deleting' if deleting else 'setting'} it takes MANAGE permission on {message.name!r} (user "
                    f"{username!r} has {permission.name}); ask a user with MANAGE (the approver role of "
                    "`sentiment-flow add-user`) to approve it."
                )
    elif request.path in SET_TAG:
        message = _get_request_message(SetRegisteredModelTag())
        _check_tag(username, admin, message.name, message.key, message.value)
    elif request.path in DELETE_TAG:
        message = _get_request_message(DeleteRegisteredModelTag())
        _check_tag(username, admin, message.name, message.key, None, deleting=True)
    elif request.path in CREATE:
        message = _get_request_message(CreateRegisteredModel())
        for tag in message.tags:
            _check_tag(username, admin, message.name, tag.key, tag.value, existing={})
        if not admin:
            _check_creation(username, message.name)
    elif request.path in RENAME and not admin:
        message = _get_request_message(RenameRegisteredModel())
        held = sorted(set(_tags_and_aliases(message.name)[1]) & set(protected_aliases()))
        permission = _permission(username, message.name)
        if held and not permission.can_manage:
            raise _refuse(
                f"Registered model {message.name!r} holds the protected alias {held[0]!r}, which a rename moves: "
                f"renaming it takes MANAGE permission on {message.name!r} (user {username!r} has "
                f"{permission.name})."
            )
        _check_creation(username, message.new_name)
    return None


def _check_tag(
    username: str,
    admin: bool,
    name: str,
    key: str,
    value: str | None,
    existing: dict[str, str] | None = None,
    deleting: bool = False,
) -> None:
    """Refuse a change to an audit record or an approval request that breaks their rules.

    `audit.*` is append-only for everyone (admins too): a new record's JSON `by` is the caller. `approval.*`:
    a new request's `requested_by` is the caller, none is overwritten, and only its requester, a MANAGE
    holder or an admin withdraws one (`deleting`). `existing` is the model's tags (looked up when None).
    """
    prefix = next((p for p in (AUDIT_TAG_PREFIX, APPROVAL_TAG_PREFIX) if key.startswith(p)), None)
    if prefix is None:
        return
    field = "by" if prefix == AUDIT_TAG_PREFIX else "requested_by"
    kind = "audit record" if prefix == AUDIT_TAG_PREFIX else "approval request"
    where = f"{kind} {key!r} of registered model {name!r}"
    if existing is None:
        existing = _tags_and_aliases(name)[0]
    if deleting:
        if prefix == AUDIT_TAG_PREFIX:
            raise _refuse(f"The {where} is append-only: no one deletes it.")
        requester = _claimed(existing.get(key), field)
        if key in existing and not admin and requester != username and not _permission(username, name).can_manage:
            raise _refuse(
                f"The {where} was made by {requester!r}: only they, a user with MANAGE permission on {name!r} "
                f"or an admin withdraw it (user {username!r} is none of these)."
            )
        return
    if key in existing:
        raise _refuse(f"The {where} exists and is never overwritten: write a new one under another key.")
    claimed = _claimed(value, field)
    if claimed != username:
        raise _refuse(
            f"The new {where} must name its author as {field!r} = the authenticated user {username!r}, not {claimed!r}."
        )


def _claimed(value, field: str) -> str | None:
    """The user a tag's JSON value names in `field`; None if it names none."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed.get(field) if isinstance(parsed, dict) else None


def _check_creation(username: str, name: str) -> None:
    """Refuse a new registered model `name` the user's grants do not allow (see the module's docstring)."""
    if not name or _exists(name):
        return  # MLflow answers a missing or taken name itself
    permission = _permission(username, name)
    if not permission.can_update:
        raise _refuse(
            f"Creating registered model {name!r} takes EDIT permission on registered models (user {username!r} "
            f"has {permission.name}); the ops role of `sentiment-flow add-user` grants it."
        )
    source = name.removesuffix(INT8_SUFFIX)
    if source != name and _exists(source):
        permission = _permission(username, source)
        if not permission.can_update:
            raise _refuse(
                f"Registered model {name!r} is the int8 variant of {source!r} and belongs to its owners: creating "
                f"it takes EDIT permission on {source!r} (user {username!r} has {permission.name})."
            )


@catch_mlflow_exception
def _after_request(response):
    """Give a new `NAME-int8`, or a copy's new model, to the MANAGE holders of the model it comes from."""
    if response.status_code != 200 or request.method != "POST":
        return response
    if request.path in CREATE:
        name = _get_request_message(CreateRegisteredModel()).name
        source = name.removesuffix(INT8_SUFFIX)
        if source != name and _exists(source):
            _share_management(source, name)
    elif request.path in CREATE_VERSION:
        # A copy (MlflowClient.copy_model_version) creates the model, then its version 1 from models:/SOURCE/...
        message = _get_request_message(CreateModelVersion())
        created = (response.get_json(silent=True) or {}).get("model_version", {})
        if message.source.startswith("models:/") and str(created.get("version")) == "1":
            source = message.source.removeprefix("models:/").split("/")[0].split("@")[0]
            if source != message.name and _exists(source):
                _share_management(source, message.name)
    return response


def _share_management(source: str, name: str) -> None:
    """Grant MANAGE on `name` to every user holding a MANAGE grant of their own on `source`."""
    for user in auth.store.list_users():
        try:
            held = auth.store.get_registered_model_permission(source, user.username).permission
        except MlflowException:
            continue  # no grant of their own: a role's grant covers every model alike
        if held == MANAGE.name:
            auth.store.grant_user_permission(user.username, REGISTERED_MODEL, name, MANAGE.name)
            log.info("Granted %s MANAGE on %s, as on %s", user.username, name, source)


def _permission(username: str, name: str):
    """`username`'s permission on registered model `name`, as MLflow's auth app resolves it (user grants, RBAC
    roles, then the default permission), also for a name that does not exist yet."""
    try:
        return auth._get_registered_model_or_prompt_permission(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
    return auth._get_role_permission_or_default(
        auth._role_permission_for_known_workspace(username, REGISTERED_MODEL, name, None)
    )


def _tags_and_aliases(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """The registered model's tags and aliases (alias -> version); both empty when it does not exist."""
    model = _registered_model(name)
    return ({}, {}) if model is None else (dict(model.tags), dict(model.aliases))


def _exists(name: str) -> bool:
    return _registered_model(name) is not None


def _registered_model(name: str):
    """The registered model `name` as the server's store holds it, or None."""
    try:
        return _get_model_registry_store().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return None


if __name__ == "__main__":
    # What `mlflow server --app-name basic-auth` does before its workers start (and only for that name): check
    # the secret key and create the admin once, so workers do not race to, and a bad admin password is one error.
    auth.get_flask_server_secret_key()
    auth.bootstrap_admin_user()
