"""Fixtures: a tiny model and synthetic data built here, an isolated MLflow store and offline W&B per test."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# huggingface_hub reads these once, at import: set them before anything imports it. No test uses the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import mlflow
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "multilingual-sentiments"

# Synthetic sentences whose label follows from one word: a 2-layer model learns them in a few steps.
SENTIMENT_WORDS = {
    "positive": ["great", "love", "wonderful", "excellent", "happy"],
    "neutral": ["okay", "average", "fine", "normal", "usual"],
    "negative": ["awful", "hate", "terrible", "horrible", "sad"],
}
FILLER = ["the", "movie", "was", "a", "day", "food", "service", "today", "really", "this", "is", "it"]


def sentence(rng: random.Random, label: str) -> str:
    words = rng.sample(FILLER, k=rng.randint(2, 8))
    words.insert(rng.randrange(len(words) + 1), rng.choice(SENTIMENT_WORDS[label]))
    return " ".join(words)


def synthetic_split(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    labels = [list(SENTIMENT_WORDS)[i % 3] for i in range(n)]
    return pd.DataFrame({"text": [sentence(rng, label) for label in labels], "label": labels, "source": "synthetic"})


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data folder laid out like ../shared: english/{train,valid,test}.csv of synthetic rows."""
    root = tmp_path_factory.mktemp("data")
    (root / "english").mkdir()
    for seed, (split, n) in enumerate({"train": 900, "valid": 60, "test": 60}.items()):
        synthetic_split(n, seed).to_csv(root / "english" / f"{split}.csv", index=False)
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide DistilBERT and a word-level tokenizer whose vocab is written here."""
    import torch
    from transformers import BertTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from sentiment_flow.config import LABEL2ID, LABELS

    root = tmp_path_factory.mktemp("tiny-model")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *sum(SENTIMENT_WORDS.values(), [])]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=64)
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        seq_classif_dropout=0.0,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id=LABEL2ID,
    )
    model_dir = root / "model"
    torch.manual_seed(0)
    DistilBertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def isolate(mp: pytest.MonkeyPatch, root: Path) -> str:
    """Point the cwd, the MLflow store and W&B (offline) at `root`; returns the store URI.

    Module-scoped fixtures call it with their own `pytest.MonkeyPatch.context()`.
    """
    uri = f"sqlite:///{root}/mlflow.db"
    mp.chdir(root)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.delenv("MLFLOW_RUN_ID", raising=False)
    mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_DIR", str(root))
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("XDG_STATE_HOME", str(root))  # the CLI's log files (sentiment_flow/logs.py)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test: its own cwd and sqlite MLflow store, W&B offline into tmp_path, no Hub access."""
    isolate(monkeypatch, tmp_path)
    environment = dict(os.environ)  # commands run in-process write os.environ (credentials moved out of a URI)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield tmp_path
    os.environ.clear()
    os.environ.update(environment)
    # A command run in-process routes logging and warnings for its process (logs.setup): undo it, or the next
    # test's setup finds warnings captured already and leaves them with pytest's recorder of this test.
    logging.captureWarnings(False)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    while mlflow.active_run():
        mlflow.end_run()
    if "wandb" in sys.modules:  # wandb keeps the first run's settings (WANDB_DIR) process-wide
        sys.modules["wandb"].teardown()


@pytest.fixture
def register_tiny_model(tiny_model_dir):
    """Factory: log the tiny model as a transformers-flavor version with test metrics; returns the version."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sentiment_flow import runs
    from sentiment_flow.training import tracking

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def register(
        name: str = "sentiment-english",
        test_f1_macro: float | None = 0.7,
        test_accuracy: float | None = 0.7,
        data_hash: str = "d" * 64,
        lang: str = "english",
    ) -> str:
        metrics = {
            k: v for k, v in {"test_f1_macro": test_f1_macro, "test_accuracy": test_accuracy}.items() if v is not None
        }
        with mlflow.start_run() as run:
            mlflow.log_metrics(metrics)
            info = tracking.log_model(model, tokenizer, None)
            tags = {
                "lang": lang,
                "base_model": "tiny-distilbert",
                "data_hash": data_hash,
                "mlflow_run_id": run.info.run_id,
            }
            tags.update({k: f"{v:.4f}" for k, v in metrics.items()})
            with runs.registration(name) as registered:
                registered.register(info.model_uri, tags, "Tiny test model.", "Tiny test models.")
            return registered.version

    return register


@dataclass(frozen=True)
class Template:
    db: Path
    model_uri: str  # models:/m-... of the tiny model logged once
    model_dir: Path  # that model's artifacts, to copy and break


@pytest.fixture(scope="session")
def template(tmp_path_factory, tiny_model_dir) -> Template:
    """A store holding the tiny model, logged once; each test starts from a copy of its database.

    Creating the schema and saving the weights cost seconds per test; copying the file costs
    milliseconds. The copies point at the template's artifacts, which no test modifies.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sentiment_flow.training import tracking

    root = tmp_path_factory.mktemp("template-store")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        with mlflow.start_run():
            info = tracking.log_model(model, tokenizer, registered_model_name=None)
        location = mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location
    return Template(db=root / "mlflow.db", model_uri=info.model_uri, model_dir=Path(location.removeprefix("file://")))


@pytest.fixture
def model_dir(template) -> str:
    """The tiny model as a local MLflow model directory (the fastest URI to load)."""
    return str(template.model_dir)


@pytest.fixture
def ready_store(template, isolated) -> None:
    """This test's store as a copy of a ready one: each CLI `score` records a scoring run, and creating a
    store's schema costs seconds."""
    shutil.copyfile(template.db, isolated / "mlflow.db")


def requires_shared_data(lang: str = "english"):
    """Skip (not fail) where ../shared/data is absent, as in a user's fresh clone."""
    return pytest.mark.skipif(
        not (SHARED_DATA / lang / "train.csv").is_file(), reason=f"{SHARED_DATA / lang} is absent"
    )


# What a command run in this process (CliRunner) sets for itself when not verbose (logs.setup); a module- or
# session-scoped fixture's command leaves them in os.environ for later tests, and a subprocess must not inherit
# them: a `-v` command would then print no transformers report.
QUIETING_VARIABLES = ("TRANSFORMERS_VERBOSITY", "WANDB_QUIET")


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's bin first on PATH (`mlflow run` and `mlflow models serve` start `python`
    and `uvicorn` from PATH), without what an in-process command set to quiet its own libraries."""
    env = {key: value for key, value in os.environ.items() if key not in QUIETING_VARIABLES}
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def http_service(command: list[str], url: str, health_path: str, log_path: Path, timeout: float = 180):
    """Run `command` (a server on `url`) until `health_path` answers 200; yield `url`; stop it and its workers."""
    with http_process(command, url, health_path, log_path, timeout):
        yield url


@contextmanager
def http_process(command: list[str], url: str, health_path: str, log_path: Path, timeout: float = 180):
    """As http_service, yielding the server's process (to signal it; it is stopped on exit if still running)."""
    with open(log_path, "w") as log:
        # Its own process group: stopping it stops the workers it starts, and nothing else.
        server = subprocess.Popen(
            command, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{url}{health_path}", timeout=2).status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{command[:3]} did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield server
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:  # a test stopped it, and every process of its group is gone
            pass
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
