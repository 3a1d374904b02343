"""`sentiment-flow monitor` on scoring runs recorded by scoring/runs.py's `record`, from synthetic calibrated
probabilities: no model is loaded, so each test takes about a second.

A "version" here is a training run holding what training logs for monitoring (drift_baseline.json,
probability_stats.json, test_f1_macro), registered and behind the champion alias.
"""

from __future__ import annotations

import html.parser
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from sentiment_flow import metrics
from sentiment_flow.cli import cli
from sentiment_flow.config import LABELS, MONITORING_EXPERIMENT, SCORING_EXPERIMENT, MonitorConfig
from sentiment_flow.errors import ALERT_EXIT_CODE
from sentiment_flow.monitoring import drift, vocabulary
from sentiment_flow.monitoring import probabilities as P
from sentiment_flow.scoring import runs as scoring_runs
from sentiment_flow.scoring.scorer import ScoreSummary

from conftest import REPO_ROOT

NAME = "sentiment-monitored"


def sample(rows: int, seed: int, sharpness: float = 1.0, length_mean: float = 20.0):
    """Calibrated probabilities (a gold label drawn from each row's own), token lengths and gold labels.

    sharpness < 1 flattens the probabilities (a less confident model on unfamiliar text); still calibrated.
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, size=(rows, len(LABELS))) * sharpness
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    gold = np.array([rng.choice(len(LABELS), p=p) for p in probs])
    lengths = np.clip(rng.poisson(length_mean, rows), 3, 128)
    return probs, lengths, gold


@pytest.fixture
def version(ready_store):
    """A registered version behind `champion` whose training run logged the monitoring baseline; returns its run."""
    return register_version()


def register_version() -> str:
    """NAME version 1 behind `champion`, its run holding what training logs for monitoring; returns the run id."""
    probs, lengths, gold = sample(870, seed=1)
    with mlflow.start_run() as run:
        f1 = metrics.classification_metrics(gold, probs.argmax(axis=1))["f1_macro"]
        mlflow.log_metric("test_f1_macro", f1)
        mlflow.log_dict(
            {
                "labels": list(LABELS),
                "test_label_counts": np.bincount(gold, minlength=3).tolist(),
                "token_length_counts": np.bincount(lengths).tolist(),
            },
            drift.BASELINE_ARTIFACT,
        )
        mlflow.log_dict(P.to_json(P.of(probs)), P.ARTIFACT)
        # Shares only: 20 % of the test split's words and 70 % of its bigrams are not in the train split.
        mlflow.log_dict({"words": [], "bigrams": [], "test_counts": [200, 1000, 630, 900]}, vocabulary.ARTIFACT)
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    mv = client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(NAME, "champion", mv.version)
    return run.info.run_id


def record(tmp_path: Path, probs, lengths, gold=None, version: str = "1", hours_ago: float = 0, words=None) -> str:
    """One scoring run of NAME/version, recorded as `score` records it (started `hours_ago`); returns its id."""
    predicted = probs.argmax(axis=1)
    scores = metrics.classification_metrics(gold, predicted) if gold is not None else {}
    summary = ScoreSummary(
        output=tmp_path / "out.csv",
        model_version=f"{NAME}/{version}",
        rows=len(probs),
        blank=0,
        seconds=1.0,
        label_counts={label: int((predicted == i).sum()) for i, label in enumerate(LABELS)},
        labelled=len(probs) if gold is not None else 0,
        accuracy=scores.get("accuracy"),
        f1_macro=scores.get("f1_macro"),
        token_length_counts=np.bincount(lengths),
        input_hash="0" * 64,
        probability_stats=P.of(probs),
        vocabulary_counts=np.array(words or [len(probs), 5 * len(probs), 3 * len(probs), 4 * len(probs)]),
    )
    (tmp_path / "in.csv").write_text("text\nx\n")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(SCORING_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(SCORING_EXPERIMENT)
    start = int((time.time() - hours_ago * 3600) * 1000)
    with mlflow.start_run(client.create_run(experiment_id, start_time=start).info.run_id) as run:
        scoring_runs.record(summary, f"models:/{NAME}@champion", str(tmp_path / "in.csv"), {"engine": "local"})
    return run.info.run_id


def monitor(*args: str):
    return CliRunner().invoke(cli, ["monitor", NAME, *args])


def monitoring_run():
    (run,) = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT], output_format="list")
    return run


def checks_of(run) -> list[dict]:
    return mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/checks.json")["checks"]


def test_scoring_like_the_test_split_is_quiet_and_the_estimate_is_within_its_uncertainty(version, tmp_path):
    probs, lengths, gold = sample(870, seed=2)
    record(tmp_path, probs, lengths, gold)

    result = monitor()

    assert result.exit_code == 0, result.output
    assert "OK: every check holds" in result.output
    checks = {c["check"]: c for c in checks_of(monitoring_run()) if c["scope"] == "all runs"}
    assert {name: c["status"] for name, c in checks.items()} == dict.fromkeys(
        ("class_mix", "token_length", "confidence", "unseen_words", "unseen_bigrams", "estimated_f1", "realized_f1"),
        "ok",
    )
    estimated, realized = checks["estimated_f1"], checks["realized_f1"]
    assert abs(estimated["value"] - realized["value"]) <= max(3 * estimated["std"], 0.03)
    assert 0.005 < estimated["std"] < 0.05  # ~ 1 / sqrt(870) scale
    assert all(c["rows"] == 870 for c in checks.values())


def test_a_less_confident_population_alerts_with_exit_3_and_names_the_check(version, tmp_path):
    probs, lengths, _ = sample(600, seed=3, sharpness=0.4)
    record(tmp_path, probs, lengths)

    result = monitor()

    assert result.exit_code == ALERT_EXIT_CODE, result.output
    assert "ALERT" in result.output and "confidence" in result.output
    run = monitoring_run()
    assert run.data.tags["verdict"] == "alert"
    alerted = {c["check"] for c in checks_of(run) if c["status"] == "alert"}
    assert {"confidence", "estimated_f1"} <= alerted


@pytest.mark.slow  # seconds: keeps the quick loop's budget
def test_longer_texts_alert_on_token_length_only(version, tmp_path):
    probs, lengths, _ = sample(600, seed=4, length_mean=60)
    record(tmp_path, probs, lengths)

    result = monitor()

    assert result.exit_code == ALERT_EXIT_CODE
    alerted = {c["check"] for c in checks_of(monitoring_run()) if c["status"] == "alert"}
    assert alerted == {"token_length"}


def test_shuffled_or_foreign_words_alert_on_unseen_bigrams(version, tmp_path):
    probs, lengths, _ = sample(600, seed=11)
    record(tmp_path, probs, lengths, words=[1200, 6000, 2000, 2400])  # 20 % unseen words, 83 % unseen bigrams

    assert monitor().exit_code == ALERT_EXIT_CODE
    alerted = {c["check"]: c for c in checks_of(monitoring_run()) if c["status"] == "alert"}
    assert set(alerted) == {"unseen_bigrams"}
    assert alerted["unseen_bigrams"]["value"] == pytest.approx(2000 / 2400)
    assert alerted["unseen_bigrams"]["threshold"] == "<= 0.7500 (test 0.7000 + 0.05)"


def test_too_few_rows_say_so_instead_of_a_number_and_do_not_alert(version, tmp_path):
    probs, lengths, _ = sample(50, seed=5, sharpness=0.3, length_mean=80)  # would alert with enough rows
    record(tmp_path, probs, lengths)

    result = monitor()

    assert result.exit_code == 0, result.output
    assert "not enough rows" in result.output
    checks = checks_of(monitoring_run())
    assert {c["status"] for c in checks} == {"not enough rows"}
    assert all(c["value"] is None and c["rows"] == 50 for c in checks)


def test_the_report_is_html_naming_the_version_with_its_plots(version, tmp_path):
    for seed in (6, 7):
        record(tmp_path, *sample(300, seed=seed)[:2])

    assert monitor().exit_code == 0
    run = monitoring_run()
    page = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/report.html")
    parser = html.parser.HTMLParser()
    parser.feed(page)
    parser.close()
    assert f"Monitoring {NAME} version 1" in page
    assert page.count('src="data:image/png;base64,') == 4  # over time, and all runs vs training for each PSI
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert plots == {
        f"plots/{n}.png" for n in ("over_time", "class_mix_drift", "token_length_drift", "confidence_drift")
    }
    assert run.data.params["model_version"] == "1" and run.data.params["scoring_runs"] == "2"
    assert run.data.metrics["rows"] == 600


@pytest.mark.slow  # seconds: keeps the quick loop's budget
def test_only_the_versions_runs_within_since_are_read(version, tmp_path):
    recent = record(tmp_path, *sample(300, seed=8)[:2], hours_ago=0.5)
    record(tmp_path, *sample(300, seed=9)[:2], hours_ago=3)
    mlflow.MlflowClient().create_model_version(NAME, f"runs:/{version}/model", version)  # not behind the alias
    record(tmp_path, *sample(300, seed=10)[:2], version="2")

    assert monitor("--since", "1h").exit_code == 0
    run = monitoring_run()
    assert run.data.params["scoring_runs"] == "1"
    assert {c["scope"] for c in checks_of(run)} == {recent, "all runs"}


@pytest.mark.parametrize("since", ["7", "0d", "seven days", "-1d"])
def test_a_bad_since_is_refused_in_one_line(version, since):
    result = monitor("--since", since)
    assert result.exit_code == 2
    assert "is not a duration; use a positive number and a unit, e.g. 7d" in result.output


def test_an_unknown_alias_is_refused_with_exit_2(version):
    result = monitor("--alias", "champoin")
    assert result.exit_code == 2


def test_mlproject_monitor_passes_every_cli_option_with_the_config_defaults():
    import click

    options = {p.name: p for p in cli.commands["monitor"].params if isinstance(p, click.Option)}
    defaults = {name: field.default for name, field in MonitorConfig.__dataclass_fields__.items()}
    assert {name: options[name].default for name in defaults} == defaults
    entry = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]["monitor"]
    assert set(entry["parameters"]) == {"model_name", *defaults}
    for name in defaults:
        option = options[name]
        assert option.type.convert(str(entry["parameters"][name]["default"]), option, None) == option.default, name
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"]


def test_shuffled_words_keep_the_vocabulary_but_not_its_bigrams():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, 12)) for _ in range(400)]  # word pairs repeat across texts
    train, test = texts[:300] * 2, texts[:100]
    known = vocabulary.baseline(train, test)
    shuffled = [" ".join(rng.permutation(t.split())) for t in test]
    unseen_words, total_words, unseen_bigrams, total_bigrams = vocabulary.counts(shuffled, known)
    assert (unseen_words, total_words) == (0, 1200)
    assert known["test_counts"] == [0, 1200, 0, 1100]
    assert unseen_bigrams / total_bigrams > 0.8  # 89 %: a shuffle keeps a few pairs of its own text
    first, second = test[0].split()[:2]
    german = vocabulary.counts([f"Das ist aber {first} {second} schön"], known)
    assert german.tolist() == [4, 6, 4, 5]  # only the pair from the train split is known


def test_score_records_the_stats_of_the_probabilities_it_writes(ready_store, model_dir, tmp_path):
    from test_scoring import write_input

    write_input(tmp_path / "in.csv", n=60)
    result = CliRunner().invoke(cli, ["score", model_dir, "in.csv", "out.csv", "--probabilities", "--chunk-size", "25"])
    assert result.exit_code == 0, result.output

    (run,) = mlflow.search_runs(experiment_names=[SCORING_EXPERIMENT], output_format="list")
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{P.ARTIFACT}")
    written = pd.read_csv(tmp_path / "out.csv")[[f"prob_{label}" for label in LABELS]].to_numpy()
    expected = P.of(written)  # the written probabilities, all chunks at once
    for key in ("probability_sums", "outer_sums"):
        np.testing.assert_allclose(logged[key], expected[key], rtol=1e-9)
    assert logged["confidence_counts"] == expected["confidence_counts"].tolist()
    assert sum(logged["token_length_counts"]) == 60
    assert "vocabulary_counts" not in logged  # a model directory has no training run to read it from
