"""What the CLI prints: fixes in the user's syntax (shell or `mlflow run`), refusal hints, a copy refused by the
server, and the status and gate tables at 80 columns (CI logs and pipes) as well as wide terminals."""

from __future__ import annotations

import json
import re

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from sentiment_flow import registry
from sentiment_flow.cli import cli, in_user_syntax
from sentiment_flow.config import PromotionConfig
from sentiment_flow.registry import PromotionReport

import test_registry
from test_registry import NAME

add_version = test_registry.add_version  # the fixture: a new version whose own run has these test metrics
try:  # the team server (pgserver, MLflow's auth app) is an optional extra
    import test_server

    team = test_server.team  # the fixture: a running server with --auth, stopped when this module ends
except pytest.skip.Exception:
    test_server = None

PROD = "sentiment-english-prod"


def enter_mlflow_run(monkeypatch) -> None:
    """As `mlflow run` starts an entry point: MLFLOW_RUN_ID names a RUNNING run of this store. Set after the
    test's own runs: mlflow.start_run() would resume that run and take the variable away."""
    client = MlflowClient()
    run = client.create_run(client.create_experiment("project"))
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)


# ---------------------------------------------------------------------------------------------------------
# Fixes in the user's syntax


# Every kind of fix the library names (copied from its messages), and what `mlflow run` users read instead.
MESSAGES = [
    # an option with a placeholder, a flag, an undeclared option (MLflow passes extras on as `--KEY VALUE`)
    (
        "add --force --reason TEXT; pass --eval-data PATH, or lower --min-f1-macro 0.4 (see `sentiment-flow status`).",
        (
            "add -P force=true -P reason=TEXT; pass -P eval_data=PATH, or lower -P min-f1-macro=0.4 "
            "(see `sentiment-flow status`)."
        ),
    ),
    # another entry point's command line, in backticks and in prose
    (
        "undo with `sentiment-flow rollback sentiment-english --alias champion`.",
        "undo with `mlflow run . -e rollback -P model_name=sentiment-english -P alias=champion`.",
    ),
    (
        "Promote a version first: sentiment-flow promote m --version V --alias challenger.",
        "Promote a version first: mlflow run . -e promote -P model_name=m -P version=V -P alias=challenger.",
    ),
    (
        "promote it there with `sentiment-flow promote prod --version 1 --alias ...`.",
        "promote it there with `mlflow run . -e promote -P model_name=prod -P version=1 -P alias=...`.",
    ),
    ("(trained with `sentiment-flow train`?)", "(trained with `mlflow run .`?)"),
    # lower-case, quoted and described values
    (
        "--force needs --reason: say why, e.g. --reason 'hotfix for ticket 123'; the reason is recorded.",
        "-P force=true needs -P reason: say why, e.g. -P reason='hotfix for ticket 123'; the reason is recorded.",
    ),
    ("--model minilm needs the packaged weights", "-P model=minilm needs the packaged weights"),
    ("pass --data <folder with LANG/test.csv> and", "pass -P data=<folder with LANG/test.csv> and"),
    ("Pass --output-prefix (e.g. --output-prefix pred_) to", "Pass -P output_prefix (e.g. -P output_prefix=pred_) to"),
    ("with --encoding (e.g. --encoding latin-1) or", "with -P encoding (e.g. -P encoding=latin-1) or"),
    ("or score with --engine local.", "or score with -P engine=local."),
    ("compared on --eval-data /data/eval.csv;", "compared on -P eval_data=/data/eval.csv;"),
    # an option named without a value, followed by prose
    ("--reason is 1200 characters; at most", "-P reason is 1200 characters; at most"),
    ("Promote another version explicitly with --version.", "Promote another version explicitly with -P version."),
    ("with --max-f1-drop / --min-agreement.", "with -P max-f1-drop / -P min-agreement."),
    ("or raise --max-train-samples", "or raise -P max_train_samples"),
    ("use --max-length 64 or less.", "use -P max_length=64 or less."),
    ("reported (--require-significant)", "reported (-P require_significant=true)"),
    # not an option of this CLI
    ("pass --master to spark-submit", "pass --master to spark-submit"),
]


@pytest.mark.parametrize(("text", "expected"), MESSAGES)
def test_under_mlflow_run_each_kind_of_fix_names_parameters_of_the_right_entry_point(text, expected, monkeypatch):
    assert in_user_syntax(text) == text
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    assert in_user_syntax(text) == expected


def test_under_mlflow_run_the_undo_hint_of_a_promotion_is_the_rollback_entry_point(add_version, monkeypatch):
    v1 = add_version(0.7)
    enter_mlflow_run(monkeypatch)

    promoted = CliRunner().invoke(cli, ["promote", NAME, "--version", v1, "--alias", "champion"])

    assert promoted.exit_code == 0, promoted.output
    assert f"undo with `mlflow run . -e rollback -P model_name={NAME} -P alias=champion`." in promoted.output
    assert "sentiment-flow rollback" not in promoted.output and "=true" not in promoted.output


def test_under_mlflow_run_registry_errors_name_the_promote_entry_point(add_version, monkeypatch):
    add_version(0.7)
    enter_mlflow_run(monkeypatch)

    rollback = CliRunner().invoke(cli, ["rollback", NAME])

    assert rollback.exit_code == 2, rollback.output
    assert f"mlflow run . -e promote -P model_name={NAME} -P version=V -P alias=champion." in rollback.output


# ---------------------------------------------------------------------------------------------------------
# Refusal hints


def test_a_refusal_advises_force_only_when_force_was_not_given(add_version):
    registry.promote(NAME, add_version(0.7), "champion")
    v2 = add_version(0.8)
    # Significance required, but no same-data evaluation to measure it: a gate --force cannot override.
    config = PromotionConfig(require_significant=True)

    unforced = registry.promote(NAME, v2, "champion", config=config)
    forced = registry.promote(NAME, v2, "champion", config=config, force=True, reason="hotfix")

    assert unforced.failed == forced.failed == ("significance",)
    assert "add --force --reason TEXT" in unforced.summary
    assert "--force" not in forced.summary.replace("--force overrides only a gate that was measured", "")
    assert forced.summary.endswith("--force overrides only a gate that was measured: see the note of each that failed.")


def test_a_refusal_of_a_failed_metric_gate_still_advises_force():
    report = PromotionReport(NAME, "2", "champion", "1", "1", gates=(_gate("no_regression", "fail"),))

    assert report.summary.endswith("add --force --reason TEXT (recorded on the version).")


def _gate(name: str, outcome: str) -> registry.Gate:
    return registry.Gate(name, "0.6000", "0.7000 (v1)", ">= 0.7000", outcome)


# ---------------------------------------------------------------------------------------------------------
# A copy the server refuses


def refuse(monkeypatch, method: str) -> None:
    """The store answers `method` as a server with --auth answers a user without the permission (HTTP 403)."""

    def denied(self, *args, **kwargs):
        raise MlflowException(f"Permission denied for {method}.", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(SqlAlchemyStore, method, denied)


def test_a_copy_refused_a_new_version_names_the_permissions_it_needs(add_version, monkeypatch):
    client = MlflowClient()
    client.create_registered_model(PROD)
    add_version(0.7)
    refuse(monkeypatch, "create_model_version")

    copied = CliRunner().invoke(cli, ["copy", f"models:/{NAME}/1", PROD])

    # MLflow's own first line: "Registered model '...' already exists. Creating a new version of this model..."
    *_, error = copied.output.strip().splitlines()
    assert copied.exit_code == 2 and error.startswith("Error: ") and "Traceback" not in copied.output, copied.output
    assert f"refused to add a version to registered model '{PROD}' (HTTP 403)" in error
    assert f"needs EDIT (or MANAGE) permission on '{PROD}' and READ on '{NAME}'" in error
    assert "may not yet support" not in error
    assert client.search_model_versions(f"name = '{PROD}'") == []


def test_a_copy_refused_a_new_registered_model_says_who_may_create_one(add_version, monkeypatch):
    add_version(0.7)
    refuse(monkeypatch, "create_registered_model")

    copied = CliRunner().invoke(cli, ["copy", f"models:/{NAME}/1", PROD])

    error = copied.output.strip()
    assert copied.exit_code == 2 and "\n" not in error, copied.output
    assert f"refused to create registered model '{PROD}' (HTTP 403)" in error and "EDIT permission" in error


@pytest.mark.slow
@pytest.mark.skipif(test_server is None, reason="the [server] extra is not installed")
def test_a_copy_the_team_server_refuses_names_the_permission_it_lacked(team, monkeypatch):
    from mlflow.server import get_app_client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", test_server.ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", test_server.PASSWORD)
    mlflow.set_tracking_uri(team.url)
    client = MlflowClient()
    source, destination = "copy-source", "copy-destination"
    client.create_registered_model(source)
    with mlflow.start_run() as run:
        pass
    client.create_model_version(source, f"{run.info.artifact_uri}/model", run.info.run_id)
    client.create_registered_model(destination)  # the admin's: others may read it (the default), not edit it
    get_app_client("basic-auth", tracking_uri=team.url).create_user("reader", "reader-password-123")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-password-123")

    copied = CliRunner().invoke(cli, ["copy", f"models:/{source}/1", destination])

    *_, error = copied.output.strip().splitlines()
    assert copied.exit_code == 2 and error.startswith("Error: "), copied.output
    assert f"refused to add a version to registered model '{destination}' (HTTP 403)" in error
    assert f"needs EDIT (or MANAGE) permission on '{destination}' and READ on '{source}'" in error
    assert "may not yet support" not in copied.output


# ---------------------------------------------------------------------------------------------------------
# Tables at 80 and 200 columns


def cli_output(monkeypatch, columns: int, *args: str):
    monkeypatch.setenv("COLUMNS", str(columns))  # what rich reads where stdout is not a terminal
    return CliRunner().invoke(cli, list(args))


def whole(value: str, output: str) -> bool:
    """`value` appears unbroken, not as a prefix of a longer token cut by an ellipsis."""
    return re.search(rf"(?<![\w.]){re.escape(value)}(?![\w…])", output) is not None


@pytest.fixture
def three_versions(add_version):
    """v3 newest and unpromoted, v2 champion and challenger, v1 the previous champion."""
    v1, v2 = add_version(0.7123, 0.7234), add_version(0.8345, 0.8456)
    add_version(0.7567, None)
    for version, alias in ((v1, "champion"), (v2, "champion"), (v2, "challenger")):
        assert registry.promote(NAME, version, alias).promoted
    return registry.status(NAME)


def test_status_at_80_columns_shows_every_value_whole(three_versions, monkeypatch):
    result = cli_output(monkeypatch, 80, "status", NAME)

    assert result.exit_code == 0, result.output
    listing = result.output.split("\nchampion: ")[0]  # the versions, before the alias histories
    assert max(len(line) for line in listing.splitlines()) <= 80, listing
    assert "…" not in listing
    for row in three_versions.versions:
        values = [row.version, *row.aliases, row.lang, row.base_model, row.created_at[:16].replace("T", " ")]
        values += [f"{value:.4f}" for value in row.metrics.values()]
        values += [when[:16].replace("T", " ") for when in row.promoted_at.values()]
        for value in values:
            assert whole(value, listing), (value, listing)
    assert "0.8345" in listing and "0.8456" in listing


def test_status_at_200_columns_is_one_table(three_versions, monkeypatch):
    result = cli_output(monkeypatch, 200, "status", NAME)

    header = next(line for line in result.output.splitlines() if "version" in line and "aliases" in line)
    for column in ("f1_macro", "accuracy", "base model", "created (UTC)", "promoted (UTC)"):
        assert column in header
    newest = next(line for line in result.output.splitlines() if "0.7567" in line)
    assert newest.startswith("│ 3 ") and "tiny-distilbert" in newest, result.output


@pytest.mark.parametrize("columns", [80, 200])
def test_the_gate_table_shows_every_value_whole(add_version, monkeypatch, columns):
    registry.promote(NAME, add_version(0.7123), "champion")
    v2 = add_version(0.7345)

    result = cli_output(monkeypatch, columns, "promote", NAME, "--version", v2, "--alias", "champion")

    assert result.exit_code == 0, result.output
    # From the title on: loading the model for the smoke test drew a progress bar (stderr) before it.
    output = result.output[result.output.index("Gates: ") :]
    table = output.split(f"\n{NAME}@champion now points at")[0]
    assert max(len(line) for line in table.splitlines()) <= columns, table
    assert "…" not in table
    gates = json.loads(MlflowClient().get_model_version(NAME, v2).tags["promotion.champion.gates"])
    for gate in gates:
        for value in (gate["gate"], gate["candidate"], gate["champion"], gate["threshold"], gate["outcome"]):
            for number in re.findall(r"\d\.\d{4}", value) or [value]:
                assert whole(number, table) or value in table, (value, table)
    assert ("┃ gate" in table) == (columns == 200)  # a table where it fits; blocks at 80
