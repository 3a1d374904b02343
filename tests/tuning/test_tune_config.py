"""`tune`'s options and MLproject entry point: the training's fields and TuneConfig's, defaults from one place; its
bad input refused in one line before any trial."""

import dataclasses
import json
import re

import pytest
import yaml
from click.testing import CliRunner

from sentiment_flow.cli import cli
from sentiment_flow.config import SEARCH_SPACE, TrainConfig, TuneConfig
from sentiment_flow.errors import UserError
from sentiment_flow.tuning.space import check_values, load_space

from conftest import REPO_ROOT

FIELDS = [*dataclasses.fields(TrainConfig), *dataclasses.fields(TuneConfig)]


def test_mlproject_tune_parameters_are_the_training_and_tune_fields_with_their_defaults():
    entry = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]["tune"]
    assert set(entry["parameters"]) == {f.name for f in FIELDS}
    for f in FIELDS:
        assert type(f.default)(entry["parameters"][f.name]["default"]) == f.default, f.name
        assert f"--{f.name.replace('_', '-')} {{{f.name}}}" in entry["command"]


def test_cli_tune_defaults_are_the_config_defaults():
    defaults = {p.name: p.default for p in cli.commands["tune"].params if p.name != "help"}
    assert defaults == {f.name: f.default for f in FIELDS}


def test_every_searched_parameter_is_a_training_field_and_the_default_space_passes_its_checks():
    assert set(SEARCH_SPACE) <= {f.name for f in dataclasses.fields(TrainConfig)}
    check_values(load_space(""), TrainConfig())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "Error: trials must be at least 1, got 0."),
        (["--trials", "-3"], "Error: trials must be at least 1, got -3."),
        (["--timeout-minutes", "-1"], "Error: timeout_minutes must be 0 (no limit) or positive, got -1.0."),
        (["--pruner", "hyperband"], "Error: Unknown pruner 'hyperband'. Use one of: median, halving, none."),
        (
            ["--search-space", '{"dropout": [0.1]}'],
            "Error: Unknown parameter 'dropout' in the search space: use some of learning_rate, epochs, batch_size, "
            "weight_decay, warmup_ratio, label_smoothing, max_length (docs/tuning.md).",
        ),
        (["--search-space", "{not json"], "Error: search_space (--search-space) is not valid JSON:"),
        (["--search-space", "space.json"], "Error: search_space 'space.json' is neither a JSON object nor a file"),
        (
            ["--search-space", '{"epochs": {"low": 3, "high": 1}}'],
            "Error: search_space 'epochs': low must be a number below high",
        ),
        (["--search-space", '{"epochs": []}'], "Error: search_space 'epochs': a choice list needs at least one"),
        (["--search-space", '{"warmup_ratio": [0.1, 1.5]}'], "Error: warmup_ratio must be at least 0 and below 1"),
    ],
)
def test_bad_tune_input_is_one_line_before_any_trial(args, message):
    result = CliRunner().invoke(cli, ["tune", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_search_space_file_is_read(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"batch_size": [8, 16]}))
    assert load_space(str(path)) == {"batch_size": [8, 16]}


def test_a_study_name_is_checked_like_a_model_name():
    with pytest.raises(UserError, match=re.escape("study 'a/b' is not a usable study name")):
        TuneConfig(study="a/b")
    assert TuneConfig().study_name("sentiment-english") == "tune-sentiment-english"


def test_warmup_ratio_and_label_smoothing_reach_the_trainer(tmp_path):
    # Two of the searched values are training options too, so a trial's values can be retrained with `train`.
    from sentiment_flow.training.device import training_arguments

    args = training_arguments(TrainConfig(warmup_ratio=0.1, label_smoothing=0.05), str(tmp_path))
    assert args.get_warmup_steps(200) == 20
    assert args.label_smoothing_factor == 0.05
    assert training_arguments(TrainConfig(), str(tmp_path)).get_warmup_steps(200) == 0
