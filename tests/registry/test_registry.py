"""Registry promotion against real stores: gates, aliases, audit tags, rollback, copy, concurrency, HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from sentiment_flow import registry
from sentiment_flow.cli import cli
from sentiment_flow.config import CHAMPION, PromotionConfig
from sentiment_flow.errors import UserError

from conftest import REPO_ROOT, Template, free_port, http_service, subprocess_env

NAME = "sentiment-english"
DATA_HASH = "d" * 64
# Subprocesses run this interpreter's tools (mlflow, python) from the test's virtualenv.


@pytest.fixture
def add_version(template, isolated):
    """Factory: a new version (weights of the template's model) whose own run has these test metrics."""
    shutil.copyfile(template.db, isolated / "mlflow.db")
    client = MlflowClient()

    def add(
        test_f1_macro: float | None = 0.7,
        test_accuracy: float | None = 0.7,
        *,
        name: str = NAME,
        data_hash: str = DATA_HASH,
        source: str | None = None,
        tag_metrics: dict[str, float] | None = None,
    ) -> str:
        given = {"test_f1_macro": test_f1_macro, "test_accuracy": test_accuracy}
        metrics = {key: value for key, value in given.items() if value is not None}
        with mlflow.start_run() as run:
            mlflow.log_metrics(metrics)
        if name not in {model.name for model in client.search_registered_models()}:
            client.create_registered_model(name)
        tags = {
            "lang": "english",
            "base_model": "tiny-distilbert",
            "data_hash": data_hash,
            "mlflow_run_id": run.info.run_id,
        }
        tags.update({k: f"{v:.4f}" for k, v in {**metrics, **(tag_metrics or {})}.items()})
        return str(client.create_model_version(name, source or template.model_uri, run.info.run_id, tags=tags).version)

    return add


def aliases(name: str = NAME) -> dict[str, str]:
    return {alias: str(version) for alias, version in MlflowClient().get_registered_model(name).aliases.items()}


def version_tags(version: str, name: str = NAME) -> dict[str, str]:
    return MlflowClient().get_model_version(name, version).tags


def history_tag(alias: str = CHAMPION, name: str = NAME) -> list[str]:
    """Versions in the registered model's alias_history tag, newest first."""
    document = MlflowClient().get_registered_model(name).tags[f"alias_history.{alias}"]
    return [entry["version"] for entry in json.loads(document)]


def registry_state(name: str = NAME, records: bool = True) -> dict:
    """Every alias and tag of the model and its versions: what a refused or failed command must not change.

    records=False leaves out the audit records, which a refusal appends to.
    """
    client = MlflowClient()
    model = client.get_registered_model(name)
    versions = {mv.version: mv.tags for mv in client.search_model_versions(f"name = '{name}'")}
    tags = {key: value for key, value in model.tags.items() if records or not key.startswith("audit.")}
    return {"aliases": model.aliases, "tags": tags, "versions": versions}


def refusals(name: str = NAME) -> list[registry.AuditRecord]:
    return [record for record in registry.status(name).audit if record.outcome == "refused"]


def outcomes(report: registry.PromotionReport) -> dict[str, str]:
    return {gate.gate: gate.outcome for gate in report.gates}


def broken_copy(template: Template, where: Path, breakage: str) -> str:
    """A copy of the template's model artifacts with one thing broken; returns its path as a version source."""
    target = where / breakage
    shutil.copytree(template.model_dir, target)
    if breakage == "no-weights":
        (target / "model" / "model.safetensors").unlink()
    else:  # "generic-labels": the config a model gets when training forgets id2label
        config_path = target / "model" / "config.json"
        config = json.loads(config_path.read_text())
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(3)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(3)}
        config_path.write_text(json.dumps(config))
    return str(target)


# ---------------------------------------------------------------------------------------------------------
# Gates


def test_first_promotion_without_a_champion_passes_every_gate_and_records_the_audit_tags(add_version):
    v1 = add_version(0.7, 0.7)

    report = registry.promote(NAME, v1, "champion", reason="first model")

    assert report.promoted and report.exit_code == 0
    assert outcomes(report) == dict.fromkeys(
        (
            "ready",
            "test_metrics",
            "min_f1_macro",
            "no_regression",
            "per_class_f1",
            "significance",
            "signature",
            "smoke_test",
        ),
        "pass",
    )
    assert "no champion yet" in {g.gate: g.note for g in report.gates}["no_regression"]
    assert aliases() == {"champion": v1}
    tags = version_tags(v1)
    assert tags["promotion.champion.previous_version"] == ""
    assert tags["promotion.champion.reason"] == "first model"
    assert tags["promotion.champion.promoted_at"].endswith("Z")
    assert tags["promotion.champion.promoted_by"]
    assert tags["promotion.champion.forced"] == "false"
    assert [row["gate"] for row in json.loads(tags["promotion.champion.gates"])] == list(outcomes(report))
    assert history_tag() == [v1]


def test_a_better_candidate_replaces_the_champion_and_remembers_the_previous_holder(add_version):
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")

    report = registry.promote(NAME, v2, "champion")

    assert report.promoted and report.previous == v1 and report.champion == v1
    no_regression = report.gates[3]
    assert (no_regression.candidate, no_regression.champion) == ("0.8000", f"0.7000 (v{v1})")
    assert aliases() == {"champion": v2}
    assert version_tags(v2)["promotion.champion.previous_version"] == v1
    assert history_tag() == [v2, v1]
    assert f"{NAME}@champion now points at version {v2} (before: version {v1})" in report.summary


def test_a_tie_with_the_champion_is_not_a_regression(add_version):
    v1, v2 = add_version(0.7), add_version(0.7)
    registry.promote(NAME, v1, "champion")

    assert registry.promote(NAME, v2, "champion").promoted


def test_a_candidate_worse_than_the_champion_is_refused_and_changes_nothing(add_version):
    v1, v2 = add_version(0.7), add_version(0.65)
    registry.promote(NAME, v1, "champion")
    before = registry_state(records=False)

    report = registry.promote(NAME, v2, "champion")

    assert not report.promoted and report.exit_code == 1
    assert report.failed == ("no_regression",)
    assert outcomes(report)["smoke_test"] == "skipped"  # refused already: the model is not even loaded
    assert registry_state(records=False) == before
    assert [(r.to_version, r.note) for r in refusals()] == [(v2, "refused by no_regression")]
    assert report.summary.startswith(f"Refused by no_regression: {NAME}@champion still points at version {v1}.")
    assert "--force --reason" in report.summary


def test_tolerance_lets_a_small_regression_through(add_version):
    v1, v2 = add_version(0.7), add_version(0.65)
    registry.promote(NAME, v1, "champion")

    report = registry.promote(NAME, v2, "champion", config=PromotionConfig(tolerance=0.1))

    assert report.promoted
    assert report.gates[3].threshold == ">= 0.6000 (tolerance 0.1)"


def test_challenger_is_compared_with_the_champion_not_with_the_previous_challenger(add_version):
    v1, v2, v3 = add_version(0.9), add_version(0.6), add_version(0.8)
    registry.promote(NAME, v1, "champion")

    assert registry.promote(NAME, v2, "challenger").failed == ("no_regression",)
    report = registry.promote(NAME, v3, "challenger", config=PromotionConfig(tolerance=0.15))
    assert report.promoted and report.champion == v1
    assert aliases() == {"champion": v1, "challenger": v3}
    assert version_tags(v3)["promotion.challenger.previous_version"] == ""


def test_evaluation_on_different_data_is_reported_but_not_refused(add_version):
    v1, v2 = add_version(0.7, data_hash="a" * 64), add_version(0.8, data_hash="b" * 64)
    registry.promote(NAME, v1, "champion")

    report = registry.promote(NAME, v2, "champion", dry_run=True)

    assert not report.failed
    # Versions without logged datasets: the tag fallback, and the note says so.
    assert report.gates[3].note == (
        f"compared the metrics each training recorded, as champion v{v1} has no logged test dataset (trained "
        "before datasets were logged); pass --eval-data PATH to compare on the same data; "
        "tested on different data (data_hash bbbbbbbbbbbb vs aaaaaaaaaaaa): the comparison is indicative only"
    )


def test_a_missing_metric_fails_the_metrics_gate_and_says_where_it_looked(add_version):
    v1 = add_version(0.7, test_accuracy=None)

    report = registry.promote(NAME, v1, "champion")

    assert report.failed == ("test_metrics",)
    note = report.gates[1].note
    assert note.startswith("test_accuracy in neither run ") and note.endswith(
        "nor the version tags; log it on the run or tag the version"
    )
    assert "champion" not in aliases()


def test_a_candidate_below_the_minimum_f1_is_refused(add_version):
    v1 = add_version(0.45)

    report = registry.promote(NAME, v1, "champion")

    assert report.failed == ("min_f1_macro",)
    assert (report.gates[2].candidate, report.gates[2].threshold) == ("0.4500", ">= 0.5000")
    assert registry.promote(NAME, v1, "champion", config=PromotionConfig(min_f1_macro=0.4)).promoted


@pytest.mark.parametrize("status", ["FAILED", "KILLED", "RUNNING"])
def test_a_version_whose_training_run_did_not_finish_fails_the_ready_gate(add_version, status):
    client = MlflowClient()
    v1 = add_version(0.9)
    run_id = client.get_model_version(NAME, v1).run_id
    client.update_run(run_id, status=status)

    report = registry.promote(NAME, v1, "champion", dry_run=True, force=True, reason="forcing never skips readiness")

    assert report.failed == ("ready",) and report.exit_code == 1
    assert f"is {status}, not FINISHED" in report.gates[0].note


def test_a_version_without_the_tags_training_writes_fails_the_ready_gate(add_version):
    v1 = add_version(0.9)
    MlflowClient().delete_model_version_tag(NAME, v1, "mlflow_run_id")

    report = registry.promote(NAME, v1, "champion", dry_run=True)

    assert report.failed == ("ready",)
    assert "no mlflow_run_id tag" in report.gates[0].note


def test_metrics_come_from_the_source_run_before_the_version_tags(add_version):
    # The run says 0.45, a (hand-edited) tag says 0.90: the run is the record training wrote.
    v1 = add_version(0.45, tag_metrics={"test_f1_macro": 0.9})

    report = registry.promote(NAME, v1, "champion")

    assert report.failed == ("min_f1_macro",)
    assert report.gates[1].note.startswith("from run ")


def test_metrics_fall_back_to_the_version_tags_when_the_run_is_not_in_this_store(add_version, template):
    # As for a version copied from another tracking server: it names a run this store does not have.
    client = MlflowClient()
    client.create_registered_model(NAME)
    tags = {"test_f1_macro": "0.7100", "test_accuracy": "0.7200", "data_hash": DATA_HASH, "mlflow_run_id": "f" * 32}
    v1 = str(client.create_model_version(NAME, template.model_uri, run_id="f" * 32, tags=tags).version)

    report = registry.promote(NAME, v1, "champion")

    assert report.promoted
    assert report.gates[1].candidate == "f1_macro=0.7100, accuracy=0.7200"
    assert report.gates[1].note == "from version tags"


def test_smoke_test_refuses_a_model_whose_weights_are_missing_even_when_forced(add_version, template, tmp_path):
    v1 = add_version(0.8, source=broken_copy(template, tmp_path, "no-weights"))
    before = registry_state(records=False)

    report = registry.promote(NAME, v1, "champion")
    forced = registry.promote(NAME, v1, "champion", force=True, reason="trying anyway")

    assert outcomes(report)["signature"] == "pass"  # the MLmodel is intact; loading is what fails
    assert report.failed == forced.failed == ("smoke_test",)
    assert "load/predict failed" in report.gates[-1].note and "model.safetensors" in report.gates[-1].note
    assert registry_state(records=False) == before
    assert [(r.forced, r.reason) for r in refusals()] == [(True, "trying anyway"), (False, "")]


def test_smoke_test_refuses_a_model_predicting_labels_outside_the_three(add_version, template, tmp_path):
    v1 = add_version(0.8, source=broken_copy(template, tmp_path, "generic-labels"))

    report = registry.promote(NAME, v1, "champion")

    assert report.failed == ("smoke_test",)
    assert report.gates[-1].note.startswith("unknown labels LABEL_")
    assert "id2label = ['positive', 'neutral', 'negative']" in report.gates[-1].note


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no-such-model", "1", "champion"), "Registered model 'no-such-model' does not exist in sqlite:///"),
        ((NAME, "9", "champion"), f"Version 9 of '{NAME}' does not exist; its versions are 1, 2."),
        ((NAME, "abc", "champion"), "A version is a number like 3, got 'abc'."),
        ((NAME, "1", "champoin"), "Unknown alias 'champoin'. Use one of: challenger, champion."),
    ],
)
def test_unknown_model_version_or_alias_is_a_usage_error_naming_the_fix(add_version, args, message):
    add_version(), add_version()

    with pytest.raises(UserError, match=message.replace("(", r"\(")) as error:
        registry.promote(*args)

    assert error.value.exit_code == 2
    if args[0] == "no-such-model":
        assert f"Models there: {NAME}." in str(error.value)


@pytest.mark.parametrize(
    "name, message",
    [
        ("a/b", "Invalid model name 'a/b'. Names cannot contain '/' or ':': pass a registered model name"),
        ("", "Missing value for required parameter 'name'"),
    ],
)
def test_names_mlflow_rejects_are_one_line_usage_errors(add_version, name, message):
    add_version()
    result = CliRunner().invoke(cli, ["status", name])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_a_name_with_a_single_quote_works_for_status_and_promote(add_version):
    v1 = add_version(name="it's")
    assert [row.version for row in registry.status("it's").versions] == [v1]
    assert registry.promote("it's", v1, "champion").promoted
    with pytest.raises(UserError, match=f"its versions are {v1}"):
        registry.promote("it's", "99", "champion")


def test_promoting_to_the_alias_a_version_already_holds_is_a_no_op(add_version):
    v1 = add_version()
    registry.promote(NAME, v1, "champion")
    before = registry_state()

    report = registry.promote(NAME, v1, "champion")

    assert report.already_held and not report.promoted and report.exit_code == 0
    assert report.gates == ()
    assert report.summary == f"{NAME}@champion already points at version {v1}: nothing to do."
    assert registry_state() == before


def test_dry_run_changes_nothing_and_exits_by_what_the_gates_say(add_version):
    v1, v2, v3 = add_version(0.7), add_version(0.8), add_version(0.6)
    registry.promote(NAME, v1, "champion")
    before = registry_state()

    passing = registry.promote(NAME, v2, "champion", dry_run=True)
    failing = registry.promote(NAME, v3, "champion", dry_run=True)

    assert registry_state() == before
    assert (passing.exit_code, failing.exit_code) == (0, 1)
    assert outcomes(passing)["smoke_test"] == "pass"
    assert passing.summary.startswith("Dry run, nothing changed: every gate passes;")
    assert failing.summary == f"Dry run, nothing changed: version {v3} would be refused by no_regression."


def test_force_without_a_reason_is_refused_before_anything_runs(add_version):
    v1 = add_version(0.1)

    with pytest.raises(UserError, match="--force needs --reason: say why gates 2-3 are overridden") as error:
        registry.promote(NAME, v1, "champion", force=True, reason="  ")

    assert error.value.exit_code == 2


def test_force_with_a_reason_overrides_the_metric_gates_and_records_it(add_version):
    v1, v2 = add_version(0.7), add_version(0.45)
    registry.promote(NAME, v1, "champion")

    report = registry.promote(NAME, v2, "champion", force=True, reason="incident 42: v1 mislabels refunds")

    assert report.promoted
    assert {g.gate: g.outcome for g in report.gates if g.outcome != "pass"} == {
        "min_f1_macro": "forced",
        "no_regression": "forced",
    }
    tags = version_tags(v2)
    assert (tags["promotion.champion.forced"], tags["promotion.champion.reason"]) == (
        "true",
        "incident 42: v1 mislabels refunds",
    )
    assert [row["outcome"] for row in json.loads(tags["promotion.champion.gates"])].count("forced") == 2


def test_a_crash_while_moving_the_alias_leaves_aliases_and_tags_as_before(add_version, monkeypatch):
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    before = registry_state()

    def crash(self, name, alias, version):
        raise ConnectionError("simulated network failure")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", crash)
    with pytest.raises(ConnectionError, match="simulated"):
        registry.promote(NAME, v2, "champion")

    assert registry_state() == before


# ---------------------------------------------------------------------------------------------------------
# Rollback, history, copy, status


def test_rollback_walks_back_through_the_holders_then_refuses(add_version):
    v1, v2, v3 = add_version(0.7), add_version(0.8), add_version(0.9)
    for version in (v1, v2, v3):
        registry.promote(NAME, version, "champion")

    first = registry.rollback(NAME, reason="v3 fails on emojis")
    assert (first.from_version, first.to_version) == (v3, v2)
    assert aliases() == {"champion": v2}
    assert history_tag() == [v2, v1] == [entry.version for entry in first.history]
    rolled = registry.status(NAME).audit[0]
    assert (rolled.event, rolled.outcome, rolled.from_version, rolled.to_version) == ("rollback", "done", v3, v2)
    assert rolled.reason == "v3 fails on emojis"

    assert registry.rollback(NAME).to_version == v1
    with pytest.raises(registry.Refused, match=f"version {v1} has no previous holder recorded") as error:
        registry.rollback(NAME)
    assert error.value.exit_code == 1
    assert aliases() == {"champion": v1}


def test_a_version_promoted_again_after_a_rollback_needs_despite_rollback_and_keeps_the_rollback_record(add_version):
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    registry.promote(NAME, v2, "champion")
    registry.rollback(NAME, reason="bad outputs in prod")

    with pytest.raises(
        registry.Refused, match="was rolled back from .* \\(bad outputs in prod\\).* --despite-rollback"
    ):
        registry.promote(NAME, v2, "champion", reason="fixed upstream")
    assert aliases() == {"champion": v1}
    registry.promote(NAME, v2, "champion", reason="fixed upstream", despite_rollback=True)

    assert aliases() == {"champion": v2}
    assert version_tags(v2)["promotion.champion.previous_version"] == v1
    assert registry.status(NAME).histories["champion"][0].reason == "fixed upstream"
    events = [(r.event, r.outcome, r.to_version) for r in registry.status(NAME).audit]
    assert events == [
        ("promote", "done", v2),
        ("promote", "refused", v2),
        ("rollback", "done", v1),
        ("promote", "done", v2),
        ("promote", "done", v1),
    ]
    assert "bad outputs in prod" in registry.status(NAME).audit[0].despite_rollback


def test_rollback_of_an_alias_set_by_hand_or_not_set_at_all_is_refused_clearly(add_version):
    v1 = add_version()

    with pytest.raises(UserError, match=f"{NAME} has no alias 'champion' \\(its aliases: none\\)") as unset:
        registry.rollback(NAME)
    MlflowClient().set_registered_model_alias(NAME, "champion", v1)
    with pytest.raises(registry.Refused, match="or the alias was set outside `promote`") as by_hand:
        registry.rollback(NAME)

    assert (unset.value.exit_code, by_hand.value.exit_code) == (2, 1)
    assert aliases() == {"champion": v1}


def test_rollback_refuses_when_the_previous_holder_was_deleted(add_version):
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    registry.promote(NAME, v2, "champion")
    MlflowClient().delete_model_version(NAME, v1)

    with pytest.raises(registry.Refused, match=f"its previous holder, version {v1}, no longer exists"):
        registry.rollback(NAME)
    assert aliases() == {"champion": v2}


def test_a_promotion_superseded_before_it_finished_says_so_and_the_winner_skips_it(add_version, monkeypatch):
    v1, va, vb = add_version(0.7), add_version(0.8), add_version(0.9)
    registry.promote(NAME, v1, "champion")
    write_tag = MlflowClient.set_registered_model_tag
    raced = []

    def race(self, name, key, value):
        # B's whole promotion lands between A's alias move and A's (now stale) history write.
        if key.startswith("alias_history") and not raced:
            raced.append(None)  # first: B's own history write must not start another race
            raced[0] = registry.promote(NAME, vb, "champion")
        return write_tag(self, name, key, value)

    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", race)
    report = registry.promote(NAME, va, "champion")

    assert raced[0].promoted and raced[0].exit_code == 0
    assert (report.promoted, report.superseded_by, report.exit_code) == (False, vb, 1)
    assert f"pointed {NAME}@champion at version {vb} after this one pointed it at version {va}" in report.summary
    assert aliases() == {"champion": vb}
    # A's promotion failed, so rollback from B goes past va to the holder before both.
    assert version_tags(vb)["promotion.champion.previous_version"] == v1
    assert history_tag() == [vb, v1] == [entry.version for entry in registry.status(NAME).histories["champion"]]
    assert not [key for key in MlflowClient().get_registered_model(NAME).tags if key.startswith("promotion_pending")]


def test_copy_to_another_name_keeps_lineage_and_drops_the_source_promotion_records(add_version):
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    registry.promote(NAME, v2, "champion")
    source = MlflowClient().get_model_version(NAME, v2)

    result = registry.copy(f"models:/{NAME}@champion", "sentiment-english-prod")

    assert (result.source_version, result.name, result.version) == (v2, "sentiment-english-prod", "1")
    tags = version_tags("1", "sentiment-english-prod")
    assert tags["source_model"] == NAME and tags["source_version"] == v2
    assert tags["source_run_id"] == source.run_id and tags["source_uri"] == f"models:/{NAME}@champion"
    assert {key: tags[key] for key in ("lang", "data_hash", "test_f1_macro")} == {
        "lang": "english",
        "data_hash": DATA_HASH,
        "test_f1_macro": "0.8000",
    }
    assert not [key for key in tags if key.startswith("promotion.")]  # they name versions of the source model
    # The copy is promoted under its own name with its own (empty) history.
    assert registry.promote("sentiment-english-prod", "1", "champion").promoted
    with pytest.raises(registry.Refused, match="no previous holder"):
        registry.rollback("sentiment-english-prod")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("runs:/abc/model", "is not a registry model URI; use models:/NAME/VERSION or models:/NAME@ALIAS"),
        (f"models:/{NAME}@champion", f"{NAME} has no alias 'champion' \\(its aliases: none\\)"),
        (f"models:/{NAME}/7", f"Version 7 of '{NAME}' does not exist"),
    ],
)
def test_copy_refuses_sources_it_cannot_resolve(add_version, uri, message):
    add_version()

    with pytest.raises(UserError, match=message):
        registry.copy(uri, "sentiment-english-prod")
    assert not MlflowClient().search_registered_models("name = 'sentiment-english-prod'")


def test_status_lists_versions_newest_first_with_aliases_metrics_and_history(add_version):
    v1, v2, v3 = add_version(0.7, 0.71), add_version(0.8, 0.81), add_version(0.75, None)
    registry.promote(NAME, v1, "champion")
    registry.promote(NAME, v2, "champion")
    registry.promote(NAME, v2, "challenger")

    report = registry.status(NAME)

    assert [row.version for row in report.versions] == [v3, v2, v1]
    newest, champion, _ = report.versions
    assert newest.metrics == {"test_f1_macro": 0.75} and newest.aliases == ()
    assert champion.aliases == ("challenger", "champion")
    assert champion.metrics == {"test_f1_macro": 0.8, "test_accuracy": 0.81}
    assert (champion.lang, champion.base_model, champion.status) == ("english", "tiny-distilbert", "READY")
    assert set(champion.promoted_at) == {"challenger", "champion"}
    assert [entry.version for entry in report.histories["champion"]] == [v2, v1]


# ---------------------------------------------------------------------------------------------------------
# Command line, scripts, MLproject


def test_cli_promote_prints_the_gate_table_and_exits_0_1_or_2(add_version, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns otherwise
    v1, v2 = add_version(0.7), add_version(0.6)
    runner = CliRunner()

    promoted = runner.invoke(cli, ["promote", NAME, "--version", v1, "--alias", "champion"])
    refused = runner.invoke(cli, ["promote", NAME, "--version", v2, "--alias", "champion"])
    usage = runner.invoke(cli, ["promote", NAME, "--version", "9", "--alias", "champion"])
    status = runner.invoke(cli, ["status", NAME])

    assert promoted.exit_code == 0, promoted.output
    for word in ("gate", "candidate", "champion", "threshold", "result", "smoke_test", "pass"):
        assert word in promoted.output
    assert "['text': string (required)]" in promoted.output  # cells are printed as text, not read as rich markup
    assert f"{NAME}@champion now points at version {v1}" in promoted.output
    assert refused.exit_code == 1 and "Refused by no_regression" in refused.output
    assert usage.exit_code == 2 and "Version 9 of" in usage.output and "Traceback" not in usage.output
    assert status.exit_code == 0 and f"champion: v{v1} (rollback goes to nowhere)" in status.output


def test_cli_rollback_and_copy_report_what_they_did(add_version, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    registry.promote(NAME, v2, "champion")
    runner = CliRunner()

    rolled = runner.invoke(cli, ["rollback", NAME])
    nothing = runner.invoke(cli, ["rollback", NAME])
    copied = runner.invoke(cli, ["copy", f"models:/{NAME}@champion", "sentiment-english-prod"])

    assert rolled.exit_code == 0 and f"rolled back from version {v2} to {v1}" in rolled.output
    assert nothing.exit_code == 1 and "has no previous holder recorded" in nothing.output
    assert copied.exit_code == 0 and "to models:/sentiment-english-prod/1" in copied.output


# One script in the quick loop: they share their wrapper, and each run is a 1.5 s interpreter start.
@pytest.mark.parametrize(
    "script",
    ["promote", *(pytest.param(name, marks=pytest.mark.slow) for name in ("status", "rollback", "copy_version"))],
)
def test_every_registry_script_answers_help(script):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "registry_scripts" / f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: {script}.py [OPTIONS]")


def test_mlproject_registry_entry_points_pass_their_parameters_to_the_cli():
    entry_points = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]
    promote, rollback = entry_points["promote"], entry_points["rollback"]

    assert set(promote["parameters"]) == {
        "model_name",
        "version",
        "alias",
        "dry_run",
        "force",
        "reason",
        "eval_data",
        "require_significant",
        "despite_rollback",
        "max_ece",
    }
    assert set(rollback["parameters"]) == {"model_name", "alias"}
    assert rollback["parameters"]["alias"]["default"] == CHAMPION
    rollback_alias = next(p for p in cli.commands["rollback"].params if p.name == "alias")
    assert rollback_alias.default == CHAMPION
    assert promote["command"] == (
        "python -m sentiment_flow promote {model_name} --version {version} --alias {alias} "
        "--dry-run {dry_run} --force {force} --reason {reason} "
        "--eval-data {eval_data} --require-significant {require_significant} "
        "--despite-rollback {despite_rollback} --max-ece {max_ece}"
    )
    assert rollback["command"] == "python -m sentiment_flow rollback {model_name} --alias {alias}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_f1_macro": 1.5}, "min_f1_macro must be between 0 and 1, got 1.5."),
        ({"tolerance": -0.1}, "tolerance must be between 0 and 1 (a macro-F1 difference), got -0.1."),
    ],
)
def test_thresholds_outside_0_to_1_are_refused_with_what_was_given(kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PromotionConfig(**kwargs)


def test_cli_promote_thresholds_default_to_the_config():
    params = {p.name: p.default for p in cli.commands["promote"].params}
    defaults = PromotionConfig()

    assert (params["min_f1_macro"], params["tolerance"]) == (defaults.min_f1_macro, defaults.tolerance)


# ---------------------------------------------------------------------------------------------------------
# Subprocesses: concurrent promotions, `mlflow run`, an `mlflow server` over HTTP

# Two promotions racing for an alias: each waits at `set_registered_model_alias` until both are there,
# so both have read the same previous holder and both move the alias at the same moment.
RACER = """
import pathlib, sys, time
from mlflow import MlflowClient
from sentiment_flow import registry

barrier, version = pathlib.Path(sys.argv[1]), sys.argv[2]
set_alias = MlflowClient.set_registered_model_alias

def synchronised(self, *args, **kwargs):
    (barrier / version).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    return set_alias(self, *args, **kwargs)

MlflowClient.set_registered_model_alias = synchronised
sys.exit(registry.promote(sys.argv[3], version, "champion").exit_code)
"""


@pytest.mark.slow
def test_two_processes_promoting_at_once_leave_one_champion_one_failure_and_a_history_that_matches(
    add_version, tmp_path
):
    v1, va, vb = add_version(0.7), add_version(0.8), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(barrier), version, NAME],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for version in (va, vb)
    ]
    results = [(racer.wait(timeout=240), racer.stdout.read()) for racer in racers]

    holder = aliases()["champion"]
    assert holder in {va, vb}
    # The racer whose version lost the alias says so and exits 1 instead of reporting success.
    assert [code for code, _ in results] == [0 if version == holder else 1 for version in (va, vb)], results
    assert version_tags(holder)["promotion.champion.previous_version"] == v1
    assert history_tag() == [holder, v1]
    assert [entry.version for entry in registry.status(NAME).histories["champion"]] == [holder, v1]
    assert registry.rollback(NAME).to_version == v1


@pytest.mark.slow
def test_mlproject_promote_and_rollback_entry_points_run_under_mlflow_run(add_version, isolated):
    v1, v2 = add_version(0.7), add_version(0.8)
    registry.promote(NAME, v1, "champion")
    env = subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{isolated}/mlflow.db")

    def mlflow_run(entry_point: str, **params: str) -> subprocess.CompletedProcess:
        args = [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]
        command = ["mlflow", "run", str(REPO_ROOT), "-e", entry_point, *args, "--env-manager", "local"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    dry = mlflow_run("promote", model_name=NAME, version=v2, alias="champion", dry_run="true")
    assert dry.returncode == 0 and "Dry run, nothing changed" in dry.stderr + dry.stdout
    assert aliases() == {"champion": v1}
    promoted = mlflow_run("promote", model_name=NAME, version=v2, alias="champion")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert aliases() == {"champion": v2}
    v3 = add_version(0.4)
    forced = mlflow_run("promote", model_name=NAME, version=v3, alias="challenger", force="true", reason="it's a test")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert version_tags(v3)["promotion.challenger.reason"] == "it's a test"
    rolled = mlflow_run("rollback", model_name=NAME)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert aliases() == {"champion": v1, "challenger": v3}
    # Failures: `mlflow run` exits 1 whatever the command's code, and no run is left RUNNING.
    refused = mlflow_run("promote", model_name=NAME, version=add_version(0.1), alias="champion")
    nothing = mlflow_run("rollback", model_name=NAME)
    unknown = mlflow_run("promote", model_name="no-such-model", version="1", alias="champion")
    assert [refused.returncode, nothing.returncode, unknown.returncode] == [1, 1, 1]
    statuses = list(mlflow.search_runs(search_all_experiments=True)["status"])
    assert "RUNNING" not in statuses and statuses.count("FAILED") == 3


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    """A real `mlflow server` on a free loopback port, with its own sqlite store and artifact folder."""
    port = free_port()
    command = [
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    with http_service(command, f"http://127.0.0.1:{port}", "/health", tmp_path / "server.log") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        yield url


@pytest.mark.slow
def test_promotion_rollback_and_copy_work_against_an_mlflow_server_over_http(mlflow_server, register_tiny_model):
    v1 = register_tiny_model(test_f1_macro=0.7)  # weights uploaded through the server's artifact proxy
    with mlflow.start_run() as run:
        mlflow.log_metrics({"test_f1_macro": 0.8, "test_accuracy": 0.8})
    client = MlflowClient()
    source = client.get_model_version(NAME, v1).source  # models:/m-<logged model id>; the server checks the pair
    tags = {"mlflow_run_id": run.info.run_id}  # as training writes it: the ready gate requires it
    v2 = str(
        client.create_model_version(NAME, source, run.info.run_id, tags=tags, model_id=source.split("/")[-1]).version
    )

    assert registry.promote(NAME, v1, "champion").promoted
    report = registry.promote(NAME, v2, "champion")
    assert report.promoted and outcomes(report)["smoke_test"] == "pass"
    assert history_tag() == [v2, v1]
    assert registry.rollback(NAME).to_version == v1
    copied = registry.copy(f"models:/{NAME}@champion", "sentiment-english-prod")
    assert version_tags(copied.version, "sentiment-english-prod")["source_version"] == v1
    assert aliases() == {"champion": v1}

    # Credentials in the URI (this server ignores them): the message shows the store with the password as ***.
    mlflow.set_tracking_uri(mlflow_server.replace("http://", "http://alice:pw-sentinel-42@"))
    with pytest.raises(UserError) as error:
        registry.status("no-such-model")
    assert f"does not exist in {mlflow_server.replace('http://', 'http://alice:***@')}. " in str(error.value)
    assert "pw-sentinel-42" not in str(error.value)


def test_under_mlflow_run_messages_name_mlproject_parameters_instead_of_cli_options(monkeypatch):
    from sentiment_flow.cli import in_user_syntax

    text = (
        "add --force --reason TEXT; pass --eval-data PATH, or lower --min-f1-macro 0.4 (see `sentiment-flow status`)."
    )
    assert in_user_syntax(text) == text
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    assert in_user_syntax(text) == (
        "add -P force=true -P reason=TEXT; pass -P eval_data=PATH, or lower -P min-f1-macro=0.4 "
        "(see `sentiment-flow status`)."
    )
