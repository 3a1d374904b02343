"""The same-data gate: candidate and champion evaluated by mlflow.models.evaluate on one frozen set, cached.

A module store holds two tiny models whose classifier bias makes them always answer "positive" or "neutral",
so their scores on any labelled rows are known; each is "trained" (a run logging its test split as training
does) on the balanced test split and on a skewed one (80 % positive). Every test gives them versions under
its own registered name. Each claims test_f1_macro 0.99, so only a same-data evaluation tells them apart.
"""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from sentiment_flow import registry
from sentiment_flow.cli import cli
from sentiment_flow.config import LABELS, PromotionConfig
from sentiment_flow.data import read_split
from sentiment_flow.errors import UserError
from sentiment_flow.evaluation import dataset
from sentiment_flow.registry.evaluations import EXPERIMENT

from conftest import isolate, synthetic_split

LOOSE = {"min_f1_macro": 0.0, "per_class_tolerance": 1.0}  # isolates no_regression / significance


@pytest.fixture(scope="module")
def models(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """{"built": {"positive" | "neutral" | "positive-skewed" | "neutral-skewed": (source, run_id)}, "uri", "skewed"}."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sentiment_flow.training import tracking

    root = tmp_path_factory.mktemp("same-data")
    splits = {"": tiny_data_dir / "english" / "test.csv", "-skewed": root / "skewed-test.csv"}
    frame = synthetic_split(60, 99)
    pd.concat([frame[frame.label == "positive"]] * 2 + [frame[frame.label != "positive"].iloc[:10]]).to_csv(
        splits["-skewed"], index=False
    )
    built = {}
    with pytest.MonkeyPatch.context() as mp:
        uri = isolate(mp, root)
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        for label in ("positive", "neutral"):
            model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
            model.classifier.weight.data.zero_()
            model.classifier.bias.data = torch.tensor([5.0 if c == label else 0.0 for c in LABELS])
            with mlflow.start_run():
                source = tracking.log_model(model, tokenizer, None).model_uri
            for suffix, path in splits.items():
                with mlflow.start_run() as run:  # what training logs: the test split as a dataset, test metrics
                    mlflow.log_input(dataset(read_split(path), str(path), "test"), context="test")
                    mlflow.log_metrics({"test_f1_macro": 0.99, "test_accuracy": 0.99})
                built[label + suffix] = (source, run.info.run_id)
    return {"uri": uri, "built": built, "skewed": splits["-skewed"]}


@pytest.fixture
def add(models, monkeypatch, request):
    """Factory: a new version of this test's own model name from one of the built models."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", models["uri"])
    mlflow.set_tracking_uri(models["uri"])
    client = MlflowClient()
    name = request.node.name.replace("[", "-").replace("]", "")[:60]

    def version(which: str, run_id: str | None = None) -> str:
        source, trained_by = models["built"][which]
        run_id = run_id or trained_by
        if name not in {m.name for m in client.search_registered_models(max_results=1000)}:
            client.create_registered_model(name)
        return str(client.create_model_version(name, source, run_id, tags={"mlflow_run_id": run_id}).version)

    version.name = name
    return version


def evaluation_runs() -> list:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def gate(report, name: str):
    return next(row for row in report.gates if row.gate == name)


def test_a_better_candidate_passes_on_the_champions_test_data_with_a_significant_gain(add, models):
    """The champion was tested on other (skewed) data than the candidate: both are evaluated on the champion's."""
    champion, candidate = add("neutral-skewed"), add("positive")
    registry.promote(add.name, champion, "champion")

    report = registry.promote(
        add.name, candidate, "champion", config=PromotionConfig(require_significant=True, **LOOSE)
    )

    assert report.promoted, report.gates
    skewed = dataset(read_split(models["skewed"]), str(models["skewed"]), "test")
    no_regression = gate(report, "no_regression")
    assert f"the test dataset of champion v{champion} (50 rows, digest {skewed.digest})" in no_regression.note
    low = float(gate(report, "significance").champion.split("[")[1].split(",")[0])
    assert low > 0


def test_a_worse_candidate_is_refused_even_though_its_own_training_claimed_as_much(add):
    champion, candidate = add("positive-skewed"), add("neutral")
    registry.promote(add.name, champion, "champion")

    report = registry.promote(add.name, candidate, "champion", config=PromotionConfig(min_f1_macro=0.0))

    assert report.failed == ("no_regression", "per_class_f1")
    assert gate(report, "per_class_f1").note == f"below the v{champion}'s: positive"
    assert float(gate(report, "no_regression").candidate) < float(gate(report, "no_regression").champion.split()[0])


def test_a_tie_on_the_same_data_passes_but_is_not_significant(add):
    champion, candidate = add("positive"), add("positive")
    registry.promote(add.name, champion, "champion")

    tie = registry.promote(add.name, candidate, "champion", dry_run=True, config=PromotionConfig(**LOOSE))
    required = registry.promote(
        add.name, candidate, "champion", dry_run=True, config=PromotionConfig(require_significant=True, **LOOSE)
    )

    assert not tie.failed
    assert gate(tie, "significance").champion == "95% CI [+0.0000, +0.0000]"
    assert required.failed == ("significance",) and required.exit_code == 1


def test_a_small_gain_within_noise_passes_but_not_with_require_significant(add, tmp_path):
    # 11 positive, 10 neutral, 10 negative rows: always-positive beats always-neutral by about 0.012.
    rows = pd.concat([synthetic_split(30, 9), synthetic_split(3, 10).iloc[:1]])
    rows.to_csv(tmp_path / "eval.csv", index=False)
    champion, candidate = add("neutral"), add("positive")
    registry.promote(add.name, champion, "champion", config=PromotionConfig(**LOOSE))
    config = PromotionConfig(eval_data=str(tmp_path / "eval.csv"), **LOOSE)

    noisy = registry.promote(add.name, candidate, "champion", dry_run=True, config=config)
    strict = registry.promote(
        add.name,
        candidate,
        "champion",
        dry_run=True,
        config=PromotionConfig(eval_data=str(tmp_path / "eval.csv"), require_significant=True, **LOOSE),
    )

    gain = float(gate(noisy, "significance").candidate)
    assert 0 < gain < 0.02 and not noisy.failed
    assert f"--eval-data {tmp_path / 'eval.csv'} (31 rows" in gate(noisy, "no_regression").note
    assert strict.failed == ("significance",)


def test_a_second_promotion_reuses_the_cached_evaluations(add):
    champion, candidate = add("neutral-skewed"), add("positive")
    registry.promote(add.name, champion, "champion")
    registry.promote(add.name, candidate, "champion", dry_run=True, config=PromotionConfig(**LOOSE))
    mine = [r for r in evaluation_runs() if r.data.tags["evaluation.model_name"] == add.name]

    again = registry.promote(add.name, candidate, "champion", config=PromotionConfig(**LOOSE))

    assert again.promoted
    assert {r.info.run_id for r in evaluation_runs() if r.data.tags["evaluation.model_name"] == add.name} == {
        r.info.run_id for r in mine
    }
    assert sorted(r.data.tags["evaluation.model_version"] for r in mine) == sorted([champion, candidate])
    assert len({r.data.tags["evaluation.dataset_digest"] for r in mine}) == 1
    assert all(r.info.status == "FINISHED" and "f1_score" in r.data.metrics for r in mine)
    # one dataset input each (logged once, though both this project and `mlflow.models.evaluate` log it)
    assert [[i.dataset.digest for i in r.inputs.dataset_inputs] for r in mine] == [
        [r.data.tags["evaluation.dataset_digest"]] for r in mine
    ]


def test_a_champion_whose_test_file_changed_falls_back_to_the_recorded_metrics_and_says_so(add, models):
    other_csv = models["skewed"]
    original = other_csv.read_text()
    champion, candidate = add("positive-skewed"), add("neutral")
    registry.promote(add.name, champion, "champion")
    try:
        other_csv.write_text(original + "the day was great,positive,synthetic\n")
        report = registry.promote(add.name, candidate, "champion", dry_run=True)
    finally:
        other_csv.write_text(original)

    note = gate(report, "no_regression").note
    assert note.startswith(f"compared the metrics each training recorded, as {other_csv} changed since")
    assert gate(report, "per_class_f1").note.startswith("not measured: ")


def test_missing_eval_data_is_a_usage_error_naming_the_file(add, tmp_path):
    v1 = add("positive")

    with pytest.raises(UserError, match="is not a file; pass a CSV with columns text,label"):
        registry.promote(add.name, v1, "champion", config=PromotionConfig(eval_data=str(tmp_path / "nope.csv")))
    result = CliRunner().invoke(
        cli, ["promote", add.name, "--version", v1, "--alias", "champion", "--eval-data", str(tmp_path / "nope.csv")]
    )
    assert result.exit_code == 2 and "nope.csv" in result.output


def test_require_significant_without_same_data_is_refused_even_with_force(add):
    with mlflow.start_run() as run:  # a training from before datasets were logged: metrics only
        mlflow.log_metrics({"test_f1_macro": 0.5, "test_accuracy": 0.5})
    old = add("positive", run_id=run.info.run_id)
    registry.promote(add.name, old, "champion")
    candidate = add("positive")

    report = registry.promote(
        add.name,
        candidate,
        "champion",
        dry_run=True,
        force=True,
        reason="try",
        config=PromotionConfig(require_significant=True),
    )

    assert report.failed == ("significance",)
    assert "--require-significant needs a same-data evaluation" in gate(report, "significance").note
    assert "has no logged test dataset" in gate(report, "no_regression").note
    assert not [r for r in evaluation_runs() if r.data.tags["evaluation.model_name"] == add.name]


def _evaluate_in_child(uri: str, name: str, version: str, path: str, barrier, out) -> None:
    from sentiment_flow.registry.evaluations import eval_set, evaluate_version

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    data, _ = eval_set(client, None, path)
    barrier.wait()
    result = evaluate_version(client, client.get_model_version(name, version), data)
    out.put((result.metrics, result.predictions.tolist()))


@pytest.mark.slow
def test_two_promotions_evaluating_one_version_at_once_agree_and_later_ones_reuse_a_run(add, models):
    import multiprocessing

    from sentiment_flow.registry.evaluations import eval_set, evaluate_version

    version = add("positive")
    # spawn, not fork: a forked child would share this process's SQLite connections.
    spawn = multiprocessing.get_context("spawn")
    barrier, out = spawn.Barrier(2), spawn.Queue()
    args = (models["uri"], add.name, version, str(models["skewed"]), barrier, out)
    children = [spawn.Process(target=_evaluate_in_child, args=args) for _ in range(2)]
    for child in children:
        child.start()
    results = [out.get(timeout=300) for _ in children]
    for child in children:
        child.join(60)

    assert [child.exitcode for child in children] == [0, 0]
    assert results[0] == results[1]
    runs = [r for r in evaluation_runs() if r.data.tags["evaluation.model_name"] == add.name]
    assert 1 <= len(runs) <= 2
    client = MlflowClient()
    data, _ = eval_set(client, None, str(models["skewed"]))
    again = evaluate_version(client, client.get_model_version(add.name, version), data)
    assert again.run_id in {r.info.run_id for r in runs} and again.metrics == results[0][0]
    assert len([r for r in evaluation_runs() if r.data.tags["evaluation.model_name"] == add.name]) == len(runs)
