"""Every ```bash block of README.md either runs here, in order, as written, or is listed with the reason it cannot.

The runnable blocks run one after another in a fresh copy of the checkout (tracked and untracked, not ignored,
files), with no MLFLOW_TRACKING_URI or WANDB_DIR set, so the store is the one the README promises, a new
./mlflow.db there, and W&B writes ./wandb (offline: WANDB_MODE=offline, as without an account). It takes about
5 minutes on a 2-core machine (three trainings of the tiny model, some 20 commands, a served model).
Three substitutions keep it affordable and offline, each asserted to apply where expected:

- every training (`mlflow run .` of the main entry point) gets the tiny model and data of tests/conftest.py in
  place of its `model`/`data` values (given or default), plus `learning_rate=5e-3` and `max_length=32`, since
  the `auto` learning rate is meant for pretrained models and the default 128 tokens exceed the tiny model's 64
  positions; every other parameter, `epochs` included, is as written;
- the offline data folder `../shared/data/multilingual-sentiments` is the tiny data folder wherever it appears
  (the quick start's `data=` and the line that copies `test.csv` from it);
- `mlflow models serve` listens on a free port instead of 5001 (the curl lines follow it).

To add a README block: put its (section heading, first line) into RUN, if it can run here, or into SKIP with
the reason it cannot (and the test that covers it instead, if any). A block in neither fails this test.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from conftest import REPO_ROOT, free_port, http_service, subprocess_env

README = REPO_ROOT / "README.md"
OFFLINE_DATA = "../shared/data/multilingual-sentiments"
README_PORT = "5001"

# Blocks run in README order, keyed by (section heading, first line).
RUN = {
    ("Quick start", "mlflow run . -P lang=english -P model=minilm -P data=../shared/data/multilingual-sentiments --env-manager local"),
    ("Weights & Biases", "wandb sync --dry-run wandb/offline-run-*"),
    ("Typical flow", 'sentiment-flow promote sentiment-english --version 1 --alias champion --reason "first model"'),
    ("Typical flow", "python registry_scripts/status.py sentiment-english"),
    ("Typical flow", "mlflow run . -e promote -P model_name=sentiment-english -P version=3 -P alias=champion -P despite_rollback=true --env-manager local"),
    ("Batch scoring", "printf 'text\\nWhat a great day!\\nThe meeting is at noon.\\nThis is the worst service ever.\\n' > reviews.csv"),
    ("Batch scoring", "sentiment-flow score models:/sentiment-english@champion reviews.csv scored.csv"),
    ("Batch scoring", "mlflow run . -e score -P model_uri=models:/sentiment-english@champion -P input=reviews.csv -P output=scored-run.csv \\"),
    ("Batch scoring on Spark", "sentiment-flow score models:/sentiment-english@champion reviews.csv scored.parquet --engine spark"),
    ("Serving", "mlflow models serve -m models:/sentiment-english@champion --env-manager local -h 127.0.0.1 -p 5001"),
    ("Speed: int8", "sentiment-flow optimize models:/sentiment-english@champion"),
}
# Blocks that cannot run here, and why.
SKIP = {
    ("Quick start", "python -m venv .venv && . .venv/bin/activate && pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install -e \".[offline]\" && mlflow run . -P lang=english --env-manager local"):
        "creates a venv and installs from PyTorch's index and PyPI, then trains distilbert from the Hub: no Hub here; CI (.ci/run) does the install",
    ("Quick start", "python -m venv .venv && . .venv/bin/activate && pip install -e \".[offline]\" && mlflow run . -P lang=english --env-manager local"):
        "the GPU machine's install (CUDA torch) and a Hub training",
    ("Quick start", 'pip install -e ".[offline,dev,server]" && python -m pytest'):
        "the test suite itself (CI runs it)",
    ("Conda", "UV_CONSTRAINT=$PWD/constraints-cpu.txt UV_TORCH_BACKEND=cpu mlflow run . -P lang=english --env-manager uv"):
        "PyTorch's CPU index is unreachable here; tests/test_packaging.py runs the UV_FIND_LINKS route below",
    ("Conda", "UV_CONSTRAINT=$PWD/constraints-cpu.txt UV_FIND_LINKS=/opt/wheels UV_PYTHON_DOWNLOADS=never mlflow run . -P model=minilm -P data=../shared/data/multilingual-sentiments --env-manager uv"):
        "builds a uv environment (minutes); tests/test_packaging.py runs it on a few rows",
    ("Several GPUs", "torchrun --nproc-per-node 4 -m sentiment_flow train --lang english --batch-size 16   # 16 per GPU"):
        "4 processes training distilbert from the Hub; tests/test_distributed.py runs the same launch with 2 CPU processes",
    ("A shared tracking server", "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000        # MLFLOW_TRACKING_USERNAME/PASSWORD if it asks"):
        "needs the team's server; tests/test_server.py runs every command against a real one",
    ("Batch scoring on Spark", "sentiment-flow score models:/sentiment-english@champion s3a://bucket/reviews/ s3a://bucket/scored.csv --engine spark --spark-master spark://head:7077"):
        "needs object storage and a Spark cluster; tests/test_spark.py runs the engine on local[2]",
    ("Serving", "mlflow models build-docker -m models:/sentiment-english@champion -n sentiment-english:champion"):
        "Docker is not installed on these machines",
    ("Team server", 'pip install -e ".[server]"'):
        "a server that runs until stopped; tests/test_server.py starts and stops the same command",
    ("Team server", "createdb -h db.internal -U mlflow mlflow                            # once"):
        "needs an external PostgreSQL (tests/test_server.py checks the arguments of production mode)",
    ("Team server", "read -s MLFLOW_AUTH_ADMIN_PASSWORD && export MLFLOW_AUTH_ADMIN_PASSWORD"):
        "reads a password from the terminal; tests/test_server.py starts the --auth server with one",
    ("Team server", "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000 MLFLOW_TRACKING_USERNAME=admin"):
        "the admin adds users to the team's server; tests/test_server_users.py runs add-user against a real one",
    ("Team server", "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000"):
        "the team's server; tests/test_server.py logs in the same way",
    ("Team server", "mlflow run . -P lang=english -P model=minilm -P data=../shared/data/multilingual-sentiments --env-manager local"):
        "every command against the team's server: tests/test_server.py runs them against a real one",
}


@dataclass(frozen=True)
class Block:
    heading: str
    line: int  # of the first command, in README.md
    text: str

    @property
    def key(self) -> tuple[str, str]:
        return self.heading, self.text.splitlines()[0]


def bash_blocks(markdown: str) -> list[Block]:
    """The ```bash blocks of `markdown`, in order, each with the heading of its section."""
    blocks, heading, lines = [], "", markdown.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):  # any fenced block: a `# comment` inside is no heading
            end = lines.index("```", i + 1)
            if lines[i].strip() == "```bash":
                blocks.append(Block(heading, i + 2, "\n".join(lines[i + 1 : end])))
            i = end
        elif lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        i += 1
    return blocks


TRAINING = re.compile(r"^mlflow run \. (?!.*-e )(.*?)(--env-manager local)(.*)$", re.MULTILINE)


def substitute(text: str, model: Path, data: Path, port: int) -> tuple[str, int]:
    """The block with the tiny model and data in each training (see the module docstring); returns it and
    how many trainings it holds."""

    def tiny(match: re.Match) -> str:
        params = re.sub(r"-P (model|data)=\S+ ", "", match[1])
        return (
            f"mlflow run . {params}-P model={model} -P data={data} -P learning_rate=5e-3 -P max_length=32 "
            f"{match[2]}{match[3]}"
        )

    text, trainings = TRAINING.subn(tiny, text)
    return text.replace(OFFLINE_DATA, str(data)).replace(f"-p {README_PORT}", f"-p {port}").replace(
        f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}"
    ), trainings


def test_every_readme_block_is_run_or_listed_with_a_reason():
    blocks = bash_blocks(README.read_text())
    keys = [block.key for block in blocks]
    unclassified = [f"README.md:{b.line} {b.key}" for b in blocks if b.key not in RUN and b.key not in SKIP]
    assert unclassified == [], "add these README blocks to RUN or SKIP in tests/test_readme.py"
    assert sorted(RUN | set(SKIP)) == sorted(keys), "RUN/SKIP name blocks the README no longer has"


def test_substitution_replaces_only_the_model_and_data_of_trainings():
    text, trainings = substitute(
        "mlflow run . -P lang=english -P model=minilm -P data=../shared/data/multilingual-sentiments --env-manager local\n"
        "mlflow run . -P lang=english -P epochs=1 --env-manager local   # note\n"
        "mlflow run . -e promote -P model_name=m -P version=3 --env-manager local\n"
        "cp ../shared/data/multilingual-sentiments/english/test.csv test.csv",
        Path("/m"), Path("/d"), 9,
    )
    assert trainings == 2
    assert text.splitlines() == [
        "mlflow run . -P lang=english -P model=/m -P data=/d -P learning_rate=5e-3 -P max_length=32 --env-manager local",
        "mlflow run . -P lang=english -P epochs=1 -P model=/m -P data=/d -P learning_rate=5e-3 -P max_length=32 "
        "--env-manager local   # note",
        "mlflow run . -e promote -P model_name=m -P version=3 --env-manager local",
        "cp /d/english/test.csv test.csv",
    ]


def checkout_copy(dest: Path) -> Path:
    """A copy of this checkout as a fresh clone would have it, plus uncommitted edits: no store, no venv."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, dest / name)
    return dest


def run_block(text: str, cwd: Path, log: Path) -> str:
    """Run a block as one bash script that stops at the first failing command; returns its stdout."""
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", text], cwd=cwd, env=subprocess_env(), capture_output=True,
        text=True, timeout=900,
    )
    with log.open("a") as handle:
        handle.write(f"$ {text}\n{done.stdout}{done.stderr}\n")
    assert done.returncode == 0, f"README block failed (exit {done.returncode}):\n{text}\n---\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.mark.slow
def test_readme_blocks_run_in_order_on_a_fresh_store(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    checkout = checkout_copy(tmp_path / "sentiment_flow")
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("PYTHONPATH", str(checkout))  # the copy's code, also in `mlflow run` and `sentiment-flow`
    # The README's own store: MLflow's default and this project's (sqlite:///mlflow.db in the folder).
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("WANDB_DIR")  # W&B writes ./wandb/offline-run-* there, as the README says (WANDB_MODE=offline)
    port, log = free_port(), tmp_path / "readme.log"
    trainings, outputs = 0, {}
    for block in bash_blocks(README.read_text()):
        if block.key in SKIP:
            continue
        text, count = substitute(block.text, tiny_model_dir, tiny_data_dir, port)
        trainings += count
        if text.startswith("mlflow models serve"):
            serve, rest = text.split("\n", 1)  # the server runs until stopped; the curl lines ask it
            with http_service(shlex.split(serve), f"http://127.0.0.1:{port}", "/ping", tmp_path / "serve.log"):
                outputs[block.key] = run_block(rest, checkout, log)
        else:
            outputs[block.key] = run_block(text, checkout, log)

    # The quick start's training and the typical flow's two: "version 3" is the third, as the README says.
    assert trainings == 3
    # Every run in ./mlflow.db (./mlruns holds only its artifacts, no file store), each ended: under `mlflow run`
    # (Default) 3 trainings, 4 `-e promote`, 1 `-e rollback`, and `optimize`'s run beside its source; the 4
    # `sentiment-flow score` jobs and the 2 `-e score` ones (given --experiment-name) in the scoring experiment;
    # the champion's and challenger's evaluations on one frozen test set.
    assert list((checkout / "mlruns").rglob("meta.yaml")) == []
    client = mlflow.MlflowClient(f"sqlite:///{checkout}/mlflow.db")
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    runs = client.search_runs(list(experiments))
    assert Counter(
        (experiments[run.info.experiment_id], run.data.tags.get("mlflow.project.entryPoint"), run.info.status)
        for run in runs
    ) == {
        ("Default", "main", "FINISHED"): 3, ("Default", "promote", "FINISHED"): 4,
        ("Default", "rollback", "FINISHED"): 1, ("Default", None, "FINISHED"): 1,
        ("sentiment-flow-scoring", None, "FINISHED"): 4, ("sentiment-flow-scoring", "score", "FINISHED"): 2,
        ("sentiment-flow-evaluations", None, "FINISHED"): 2,
    }
    versions = client.search_model_versions("name = 'sentiment-english'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    # The last `-e promote` (forced) left version 3 as champion; the scripts copied it to -staging.
    assert str(client.get_model_version_by_alias("sentiment-english", "champion").version) == "3"
    assert str(client.get_model_version_by_alias("sentiment-english-prod", "champion").version) == "1"
    assert str(client.search_model_versions("name = 'sentiment-english-staging'")[0].version) == "1"
    assert str(client.get_model_version_by_alias("sentiment-english-int8", "champion").version) == "1"
    for name in ("scored.csv", "scored-run.csv", "scored-test.csv", "scored-int8.csv"):
        assert (checkout / name).is_file(), name
    assert list((checkout / "scored.parquet").glob("part-*.parquet")), "the Spark engine writes a folder of parts"
    served = outputs[next(key for key in RUN if key[0] == "Serving")]
    assert served.count('{"predictions": [{"label": ') == 3, served
