"""Load, validate and tokenize the sentiment splits; imports no tracker."""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sentiment_flow.config import HUB_DATASET_REVISION, LABEL2ID, LABELS
from sentiment_flow.errors import UserError, one_line

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# The Hub calls the validation split "validation"; local folders may use either name.
SPLIT_FILES = {"train": ("train.csv",), "valid": ("valid.csv", "validation.csv"), "test": ("test.csv",)}
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class SentimentData:
    """The three splits as DataFrames with `text` and `label` (an id into LABELS)."""

    splits: dict[str, pd.DataFrame]
    source: str  # where the rows came from: a Hub id@revision or a resolved local directory
    content_hash: str  # sha256 of the rows, equal whether they came from the Hub or from a local copy
    split_sources: dict[str, str]  # split -> its file (resolved) or Hub split: the source of its mlflow.data dataset


def load_data(data: str, lang: str, max_train_samples: int = 0, seed: int = 0) -> SentimentData:
    """Load and validate the splits from a local directory or the Hub, before any training starts."""
    path = Path(data).expanduser()
    if path.exists():
        frames, files = _read_local(path, lang)
        source, split_sources = str(files["test"].parent), {split: str(file) for split, file in files.items()}
    elif HUB_ID.match(data):
        frames, source = _read_hub(data, lang)
        split_sources = {split: f"{source}[{HUB_SPLITS[split]}]" for split in SPLITS}
    else:
        raise UserError(
            f"Data directory {data!r} does not exist. Pass a local folder laid out <lang>/train.csv, "
            f"valid.csv, test.csv (e.g. -P data=../shared/data/multilingual-sentiments) or a Hub dataset id."
        )
    splits = {split: _validate(frames[split], f"{source} [{split}]") for split in SPLITS}
    content_hash = _content_hash(splits)
    if max_train_samples and max_train_samples < len(splits["train"]):
        splits["train"] = splits["train"].sample(n=max_train_samples, random_state=seed).reset_index(drop=True)
    _check_every_class(splits["train"], f"{source} [train]", max_train_samples)
    return SentimentData(splits=splits, source=source, content_hash=content_hash, split_sources=split_sources)


def read_split(path: str | Path) -> pd.DataFrame:
    """One split's CSV (columns text,label), validated as training validates it: `text` and `label` ids."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"Evaluation data {str(path)!r} is not a file; pass a CSV with columns text,label.")
    return _validate(_read_csv(path), str(path))


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise UserError(f"{str(path)!r} is empty: each split needs a header text,label and rows.") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{str(path)!r} is not UTF-8 ({exc.reason}); re-encode it as UTF-8.") from None
    _check_unique_columns(path)
    return frame


def _check_unique_columns(path: Path) -> None:
    """Refuse a header naming `text` or `label` twice: pandas reads the second as `label.1`, and training would
    silently use one of the two columns."""
    with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: a BOM is no part of the first name
        header = next((row for row in csv.reader(file) if row), [])  # pandas skips blank lines before it too
    for name in ("text", "label"):
        if header.count(name) > 1:
            raise UserError(
                f"{str(path)!r}: the header has {header.count(name)} columns named {name!r} "
                f"({','.join(header)}); keep one, or rename the others."
            )


def _read_local(path: Path, lang: str) -> tuple[dict[str, pd.DataFrame], dict[str, Path]]:
    if not path.is_dir():
        raise UserError(
            f"Data path {str(path)!r} is a file; pass the folder that holds train.csv, valid.csv, test.csv."
        )
    folder = path / lang if (path / lang).is_dir() else path
    frames, files = {}, {}
    for split, names in SPLIT_FILES.items():
        found = [folder / name for name in names if (folder / name).is_file()]
        if not found:
            raise UserError(
                f"Missing {split} split: expected {' or '.join(names)} in {str(folder)!r} "
                f"(a data folder holds <lang>/train.csv, valid.csv, test.csv or those files directly)."
            )
        files[split] = found[0].resolve()
        frames[split] = _read_csv(found[0])
    return frames, files


def _read_hub(dataset_id: str, lang: str) -> tuple[dict[str, pd.DataFrame], str]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, lang, revision=HUB_DATASET_REVISION)
    except Exception as exc:  # the Hub client raises many types for "offline" and "not found"
        raise UserError(
            f"Could not load dataset {dataset_id!r} (config {lang!r}) from the Hugging Face Hub: "
            f"{type(exc).__name__}: {one_line(exc)}. Without Hub access, point at local CSVs with "
            f"-P data=<dir with {lang}/train.csv, valid.csv, test.csv>."
        ) from exc
    frames = {}
    for split, hub_split in HUB_SPLITS.items():
        frame = ds[hub_split].to_pandas()
        names = ds[hub_split].features["label"].names  # ClassLabel ids -> names, so the order is never guessed
        frame["label"] = frame["label"].map(lambda i: names[i])  # noqa: B023 - map runs now, in this iteration
        frames[split] = frame
    return frames, f"{dataset_id}@{HUB_DATASET_REVISION}/{lang}"


def _validate(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise UserError(
            f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns)) or 'none'}. "
            "Each split needs columns text,label."
        )
    if frame.empty:
        raise UserError(f"{where}: the split has no rows.")
    labels = frame["label"].map(label_id)
    bad = frame.loc[labels.isna(), "label"]
    if len(bad):
        examples = ", ".join(repr(v) for v in bad.astype(str).unique()[:5])
        raise UserError(f"{where}: {len(bad)} row(s) have labels outside {', '.join(LABELS)} (or ids 0-2): {examples}.")
    text = frame["text"]
    blank = text.isna() | (text.astype(str).str.strip() == "")
    if blank.all():
        raise UserError(f"{where}: every text is empty.")
    if blank.any():
        log.warning("%s: dropping %d row(s) with empty text", where, int(blank.sum()))
    out = pd.DataFrame({"text": text[~blank].astype(str), "label": labels[~blank].astype(int)})
    return out.reset_index(drop=True)


def _check_every_class(train: pd.DataFrame, where: str, max_train_samples: int) -> None:
    """Refuse a training split missing a class: the 3-class head would never learn to predict it."""
    counts = train["label"].value_counts()
    missing = [label for i, label in enumerate(LABELS) if i not in counts]
    if missing:
        found = ", ".join(f"{label} {int(counts.get(i, 0))}" for i, label in enumerate(LABELS))
        fix = " or raise --max-train-samples" if max_train_samples else ""
        raise UserError(
            f"{where}: no {' or '.join(missing)} rows (counts: {found}); a {len(LABELS)}-class model cannot learn "
            f"a class it never sees. Add rows of every class{fix}."
        )


def label_id(value) -> int | None:
    """The id of a label given as a name (any case) or as an id 0-2; None for anything else."""
    key = str(value).strip().lower()
    if key in LABEL2ID:
        return LABEL2ID[key]
    if key in {"0", "1", "2"}:
        return int(key)
    return None


def _content_hash(splits: dict[str, pd.DataFrame]) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(split.encode())
        digest.update(splits[split].to_csv(index=False).encode())
    return digest.hexdigest()


def tokenize(data: SentimentData, tokenizer, max_length: int):
    """A datasets.DatasetDict of input_ids/attention_mask/labels, unpadded: the collator pads per batch."""
    import datasets

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_pandas(frame, preserve_index=False)
            .map(encode, batched=True, remove_columns=["text"], desc=f"Tokenizing {split}")
            .rename_column("label", "labels")
            for split, frame in data.splits.items()
        }
    )
