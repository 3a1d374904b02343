"""What a user reads: the project's lines, MLflow's run links and real warnings; library chatter goes to the
command's log file (sentiment_flow/logs.py), or to the terminal with -v."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from sentiment_flow import logs

from conftest import free_port, http_service, subprocess_env

# Lines a user had to read past (issue 7), each by a fragment no line of this project's own contains.
CHATTER = {
    "transformers' LOAD REPORT": "LOAD REPORT",
    "an ANSI escape (MLflow's type-hint warning, the LOAD REPORT)": "\x1b[",
    "MLflow's type-hint warning on importing int8_model": "Add type hints to the `predict` method",
    "MLflow's dataset-source warning": "interpreted in multiple ways",
    "MLflow's schema hint": "integer column(s)",
    "mlflow.transformers' Hub look-up": "model card could not be retrieved",
    "MLflow's evaluator guessing a model type": "the model type looks like None",
    "MLflow's database migrations": "Creating initial MLflow database tables",
    "onnxruntime.quantization's INFO lines": "Quantization parameters",
    "torch.onnx's tracing": "TracerWarning",
    "cloudpickle": "cloudpickle",
}


def run(args: list[str], cwd: Path, state: Path, **env: str) -> str:
    """`sentiment-flow ARGS` in a subprocess; returns stdout and stderr together (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-m", "sentiment_flow", *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(XDG_STATE_HOME=str(state), WANDB_MODE="offline", **env),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    return output


def chatter_in(output: str) -> list[str]:
    return [name for name, fragment in CHATTER.items() if fragment in output]


@pytest.mark.slow  # a few seconds: a subprocess or a training
def test_an_early_error_is_one_line_and_the_library_messages_before_it_are_in_the_log_file(tmp_path):
    # The scoring run creates the new store before the input is checked: MLflow logs that, at INFO, first.
    # (Scoring once imported the int8 variant's PythonModel here, and MLflow warned about its type hints.)
    command = [sys.executable, "-m", "sentiment_flow", "score", "models:/m/1", "missing.csv", "out.csv"]
    proc = subprocess.run(
        command,
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(XDG_STATE_HOME=str(tmp_path / "state")),
    )
    assert proc.returncode == 2
    assert proc.stdout + proc.stderr == "Error: Input file 'missing.csv' does not exist.\n"
    assert "Creating initial MLflow database tables" in (tmp_path / "state/sentiment-flow/score.log").read_text()

    proc = subprocess.run(
        [*command[:3], "-v", *command[3:]],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(
            XDG_STATE_HOME=str(tmp_path / "state-v"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/again.db"
        ),
    )
    assert "Creating initial MLflow database tables" in proc.stderr  # -v: every library message, here
    assert not (tmp_path / "state-v").exists()


@pytest.mark.slow  # a few seconds: a subprocess or a training
def test_a_log_folder_that_cannot_be_made_costs_the_user_nothing(tmp_path):
    # XDG_STATE_HOME under a file: no folder, no log file, and no "--- Logging error ---" traceback per record.
    proc = subprocess.run(
        [sys.executable, "-m", "sentiment_flow", "score", "models:/m/1", "missing.csv", "out.csv"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(XDG_STATE_HOME=os.devnull + "/state"),
    )
    assert proc.returncode == 2
    assert proc.stdout + proc.stderr == "Error: Input file 'missing.csv' does not exist.\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a second, unprivileged user (needs root)")
def test_a_user_who_cannot_write_the_log_file_sees_the_same_one_line(tmp_path):
    # Another user's log file (a shared XDG_STATE_HOME) and no home: the records go nowhere, not to a traceback.
    user = "sf-noise-user"
    created = (
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=False, capture_output=True
        ).returncode
        == 0
    )
    shared = Path(tempfile.mkdtemp(prefix="sf-noise-", dir="/tmp"))  # pytest's tmp_path is closed to others
    try:
        runs = subprocess.run(
            ["runuser", "-u", user, "--", sys.executable, "-c", "import sentiment_flow"],
            check=False,
            capture_output=True,
            text=True,
        )
        if runs.returncode != 0:
            pytest.skip(f"{user} cannot run this Python: {runs.stderr.strip()[:200]}")
        shared.chmod(0o777)
        state = shared / "state"
        (state / "sentiment-flow").mkdir(parents=True)
        (state / "sentiment-flow" / "score.log").write_text("root's\n")
        env = subprocess_env(
            HOME="/nonexistent", XDG_STATE_HOME=str(state), MLFLOW_TRACKING_URI=f"sqlite:///{shared}/mlflow.db"
        )
        proc = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                sys.executable,
                "-m",
                "sentiment_flow",
                "score",
                "models:/m/1",
                "missing.csv",
                "out.csv",
            ],
            check=False,
            cwd=shared,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout + proc.stderr == "Error: Input file 'missing.csv' does not exist.\n"
        assert (state / "sentiment-flow" / "score.log").read_text() == "root's\n"
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        if created:
            subprocess.run(["userdel", user], check=False, capture_output=True)


@pytest.fixture
def tiny_base_model_dir(tiny_model_dir, tmp_path) -> Path:
    """The tiny model without its classification head, as a pretrained checkpoint is: loading it for
    classification initialises the head, which transformers reports (the LOAD REPORT)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    base = tmp_path / "base-model"
    model.distilbert.save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base)
    return base


@pytest.mark.slow
def test_train_score_optimize_print_the_projects_lines_and_run_links_not_library_chatter(
    tiny_base_model_dir, tiny_data_dir, tmp_path
):
    port = free_port()
    server = [
        sys.executable,
        "-m",
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
        "--serve-artifacts",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
    ]
    inputs = tmp_path / "in.csv"
    inputs.write_text("text\nthe food was great\nthe day was awful\n")
    state = tmp_path / "state"
    steps = {
        "train": [
            "train",
            "--model",
            str(tiny_base_model_dir),
            "--data",
            str(tiny_data_dir),
            "--epochs",
            "1",
            "--learning-rate",
            "5e-3",
            "--max-length",
            "32",
        ],
        "score": ["score", "models:/sentiment-english/1", str(inputs), str(tmp_path / "out.csv")],
        "optimize": ["optimize", "models:/sentiment-english/1", "--max-f1-drop", "1", "--min-agreement", "0"],
    }
    with http_service(server, f"http://127.0.0.1:{port}", "/health", tmp_path / "server.log") as url:
        outputs = {name: run(args, tmp_path, state, MLFLOW_TRACKING_URI=url) for name, args in steps.items()}
        verbose = run(["-v", *steps["train"]], tmp_path, tmp_path / "state-v", MLFLOW_TRACKING_URI=url)

    chatter = {name: chatter_in(output) for name, output in outputs.items() if chatter_in(output)}
    assert not chatter, "\n".join(f"{name}: {', '.join(found)}" for name, found in chatter.items())
    for name, output in outputs.items():
        assert "View run" in output and f" at: {url}/#/experiments/" in output, name  # MLflow's run link
    # The project's own result lines.
    assert "Registered models:/sentiment-english/1" in outputs["train"]
    assert "Scored " in outputs["score"]
    assert "sentiment-english-int8" in outputs["optimize"]
    # What left the terminal is in each command's log file (transformers' LOAD REPORT is silenced at its
    # source); -v prints all of it instead, and writes no log file.
    files = {name: state / "sentiment-flow" / f"{name}.log" for name in steps}
    logged = {name: path.read_text() if path.is_file() else "" for name, path in files.items()}  # none: nothing left
    for name, fragment in [
        ("train", "interpreted in multiple ways"),
        ("train", "integer column(s)"),
        ("train", "model card"),
        ("optimize", "TracerWarning"),  # static quantization logs no "Quantization parameters" lines any more
    ]:
        assert fragment in logged[name], (name, fragment)
    # Scoring an fp32 model no longer imports the int8 variant's PythonModel, which MLflow warned about.
    assert "Add type hints to the `predict` method" not in logged["score"]
    assert {"LOAD REPORT", "interpreted in multiple ways", "integer column(s)"} <= {
        fragment for fragment in CHATTER.values() if fragment in verbose
    }, verbose[-5000:]
    assert not (tmp_path / "state-v").exists()


@pytest.mark.parametrize(
    ("name", "level", "message", "noise"),
    [
        # Kept: this project's lines, warnings about the user's data or results, and every library error.
        ("sentiment_flow.data", logging.WARNING, "train: dropping 3 row(s) with empty text", False),
        ("sentiment_flow.training.tracking", logging.INFO, "W&B run saved offline in wandb/x", False),
        ("py.warnings", logging.WARNING, "x.py:1: UndefinedMetricWarning: Precision is ill-defined", False),
        ("py.warnings", logging.WARNING, "x.py:1: UserWarning: some other library warning", False),
        ("mlflow.transformers", logging.ERROR, "The model card could not be retrieved", False),
        # To the log file: a library's INFO, and the warnings in NOISE.
        ("root", logging.INFO, 'Quantization parameters for tensor:"x" not specified', True),
        ("mlflow.store.db.utils", logging.INFO, "Creating initial MLflow database tables...", True),
        ("mlflow.transformers", logging.WARNING, "The model card could not be retrieved from the hub", True),
        ("py.warnings", logging.WARNING, "x.py:1: UserWarning: \x1b[33mAdd type hints to the `predict` method", True),
    ],
)
def test_noise_is_library_chatter_only(name, level, message, noise):
    assert logs.is_noise(logging.LogRecord(name, level, "x.py", 1, message, None, None)) is noise


def test_setup_routes_warnings_and_library_info_to_the_log_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("status", verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("The specified dataset source can be interpreted in multiple ways", UserWarning)
            warnings.warn("Precision is ill-defined and being set to 0.0", RuntimeWarning)
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
        logging.getLogger("sentiment_flow.registry").info("Promoted version 2")
    finally:
        logging.captureWarnings(False)
        for handler in [h for h in root.handlers if h not in saved[0]]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved[1])
    shown = capsys.readouterr().err
    logged = (tmp_path / "sentiment-flow" / "status.log").read_text()
    assert "Promoted version 2" in shown and "Precision is ill-defined" in shown
    assert "interpreted in multiple ways" not in shown and "Creating initial" not in shown
    assert "interpreted in multiple ways" in logged and "Creating initial" in logged
    assert "Promoted version 2" not in logged
