import pandas as pd
import pytest

from sentiment_flow.config import LABELS
from sentiment_flow.data import load_data, read_split
from sentiment_flow.errors import UserError

from conftest import synthetic_split


def write_splits(folder, **overrides):
    folder.mkdir(parents=True, exist_ok=True)
    for seed, split in enumerate(("train", "valid", "test")):
        frame = overrides.get(split, synthetic_split(12, seed))
        if frame is not None:
            frame.to_csv(folder / f"{split}.csv", index=False)
    return folder


def test_local_folder_with_a_lang_subfolder_loads_three_splits_with_label_ids(tiny_data_dir):
    data = load_data(str(tiny_data_dir), "english")
    assert [len(data.splits[s]) for s in ("train", "valid", "test")] == [900, 60, 60]
    assert list(data.splits["train"].columns) == ["text", "label"]
    assert set(data.splits["train"]["label"]) == {0, 1, 2}
    raw = pd.read_csv(tiny_data_dir / "english" / "train.csv")
    assert [LABELS[i] for i in data.splits["train"]["label"]] == list(raw["label"])


def test_folder_holding_the_split_files_directly_loads(tmp_path):
    data = load_data(str(write_splits(tmp_path / "flat")), "english")
    assert len(data.splits["test"]) == 12
    assert data.source == str((tmp_path / "flat").resolve())


def test_validation_csv_is_accepted_for_the_valid_split(tmp_path):
    folder = write_splits(tmp_path / "d", valid=None)
    synthetic_split(9, 5).to_csv(folder / "validation.csv", index=False)
    assert len(load_data(str(folder), "english").splits["valid"]) == 9


def test_content_hash_depends_on_rows_not_on_location(tmp_path):
    a = load_data(str(write_splits(tmp_path / "a")), "english")
    b = load_data(str(write_splits(tmp_path / "b")), "english")
    c = load_data(str(write_splits(tmp_path / "c", test=synthetic_split(12, 99))), "english")
    assert a.content_hash == b.content_hash != c.content_hash


def test_max_train_samples_subsamples_train_only(tiny_data_dir):
    data = load_data(str(tiny_data_dir), "english", max_train_samples=10, seed=1)
    assert len(data.splits["train"]) == 10 and len(data.splits["test"]) == 60


def test_integer_labels_and_mixed_case_names_are_accepted(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["0", " Neutral", "NEGATIVE"]})
    data = load_data(str(write_splits(tmp_path / "d", train=frame)), "english")
    assert list(data.splits["train"]["label"]) == [0, 1, 2]


def test_rows_with_empty_text_are_dropped(tmp_path):
    frame = pd.DataFrame({"text": ["good", "", None, "bad"], "label": ["positive"] * 2 + ["negative"] * 2})
    data = load_data(str(write_splits(tmp_path / "d", valid=frame)), "english")
    assert list(data.splits["valid"]["text"]) == ["good", "bad"]


def test_a_training_split_missing_a_class_is_refused_with_the_counts(tmp_path):
    frame = pd.DataFrame({"text": ["good", "fine", "great"], "label": ["positive", "neutral", "positive"]})
    with pytest.raises(
        UserError,
        match=r"\[train\]: no negative rows \(counts: positive 2, neutral 1, negative 0\); "
        r"a 3-class model cannot learn a class it never sees",
    ):
        load_data(str(write_splits(tmp_path / "d", train=frame)), "english")


def test_a_sample_too_small_to_hold_every_class_names_max_train_samples(tiny_data_dir):
    with pytest.raises(UserError, match=r"counts: .*0.*raise --max-train-samples"):
        load_data(str(tiny_data_dir), "english", max_train_samples=1)


def test_missing_data_folder_names_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"Data directory '\./nope' does not exist.*-P data="):
        load_data("./nope", "english")


def test_missing_split_file_names_the_expected_files(tmp_path):
    folder = write_splits(tmp_path / "d", test=None)
    with pytest.raises(UserError, match=r"Missing test split: expected test\.csv in"):
        load_data(str(folder), "english")


def test_missing_text_column_lists_the_columns_found(tmp_path):
    frame = pd.DataFrame({"tweet": ["a"], "label": ["positive"]})
    with pytest.raises(UserError, match=r"\[train\]: missing column\(s\) text; found tweet, label"):
        load_data(str(write_splits(tmp_path / "d", train=frame)), "english")


def test_missing_label_column_is_refused(tmp_path):
    frame = pd.DataFrame({"text": ["a"]})
    with pytest.raises(UserError, match=r"\[valid\]: missing column\(s\) label"):
        load_data(str(write_splits(tmp_path / "d", valid=frame)), "english")


def test_a_header_with_label_twice_is_refused_naming_the_file_and_the_column(tmp_path):
    # pandas would read the second as `label.1`, and training would use the first without a word.
    folder = write_splits(tmp_path / "d")
    (folder / "valid.csv").write_text("text,label,label\ngreat,positive,negative\nawful,negative,positive\n")
    message = (
        f"'{folder / 'valid.csv'}': the header has 2 columns named 'label' (text,label,label); keep one, "
        "or rename the others."
    )
    with pytest.raises(UserError) as error:
        load_data(str(folder), "english")
    assert str(error.value) == message
    with pytest.raises(UserError) as error:  # `promote --eval-data` reads its CSV the same way
        read_split(folder / "valid.csv")
    assert str(error.value) == message


def test_a_header_with_text_twice_is_refused(tmp_path):
    folder = write_splits(tmp_path / "d")
    (folder / "test.csv").write_text("\ufefftext,text,label\na,b,positive\n")  # behind a BOM, as Excel writes
    with pytest.raises(UserError, match=r"test\.csv': the header has 2 columns named 'text'"):
        load_data(str(folder), "english")


def test_a_column_really_named_label_1_beside_label_is_no_duplicate(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["positive", "neutral", "negative"], "label.1": [1, 2, 3]})
    data = load_data(str(write_splits(tmp_path / "d", train=frame)), "english")
    assert list(data.splits["train"]["label"]) == [0, 1, 2]


def test_labels_outside_the_three_classes_are_listed(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["positive", "mixed", "4"]})
    with pytest.raises(UserError, match=r"2 row\(s\) have labels outside positive, neutral, negative.*'mixed', '4'"):
        load_data(str(write_splits(tmp_path / "d", train=frame)), "english")


def test_header_only_split_is_refused(tmp_path):
    frame = pd.DataFrame({"text": [], "label": []})
    with pytest.raises(UserError, match=r"\[test\]: the split has no rows"):
        load_data(str(write_splits(tmp_path / "d", test=frame)), "english")


def test_zero_byte_split_file_is_refused(tmp_path):
    folder = write_splits(tmp_path / "d")
    (folder / "train.csv").write_bytes(b"")
    with pytest.raises(UserError, match=r"train\.csv' is empty"):
        load_data(str(folder), "english")


def test_non_utf8_file_is_refused(tmp_path):
    folder = write_splits(tmp_path / "d")
    (folder / "train.csv").write_bytes("text,label\ncaf\xe9,positive\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8"):
        load_data(str(folder), "english")


def test_hub_dataset_without_network_or_cache_says_to_use_local_data():
    with pytest.raises(UserError, match=r"Could not load dataset 'tyqiangz/multilingual-sentiments'.*-P data="):
        load_data("tyqiangz/multilingual-sentiments", "english")


def test_hub_dataset_is_read_from_the_parquet_branch_with_classlabel_names(monkeypatch, tmp_path):
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "source": datasets.Value("string"),
            # Another order than ours: ids must be translated through the names, never taken as they are.
            "label": datasets.ClassLabel(names=["negative", "neutral", "positive"]),
        }
    )
    rows = {"text": ["good", "meh", "bad"], "source": ["s"] * 3, "label": [0, 1, 2]}
    hub = datasets.DatasetDict(
        {split: datasets.Dataset.from_dict(rows, features=features) for split in ("train", "validation", "test")}
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or hub)

    data = load_data("tyqiangz/multilingual-sentiments", "german")

    assert calls == [(("tyqiangz/multilingual-sentiments", "german"), {"revision": "refs/convert/parquet"})]
    assert data.source == "tyqiangz/multilingual-sentiments@refs/convert/parquet/german"
    assert [LABELS[i] for i in data.splits["valid"]["label"]] == ["negative", "neutral", "positive"]
    # The same rows from a local copy hash the same: promotion can compare Hub and local trainings.
    frame = pd.DataFrame({"text": rows["text"], "label": ["negative", "neutral", "positive"]})
    local = write_splits(tmp_path / "copy", train=frame, valid=frame, test=frame)
    assert load_data(str(local), "german").content_hash == data.content_hash
