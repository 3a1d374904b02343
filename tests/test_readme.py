"""Every ```bash block of README.md and docs/ either runs here, in order, as written, or is listed with the
reason it cannot; and every relative link of those pages leads to a file and heading that exist.

The runnable blocks run one after another in a fresh copy of the checkout (tracked and untracked, not ignored,
files), with no MLFLOW_TRACKING_URI or WANDB_DIR set, so the store is the one the README promises, a new
./mlflow.db there, and W&B writes ./wandb (offline: WANDB_MODE=offline, as without an account). The pages run
in the order of DOCUMENTS (train, promote, score, serve, optimize: each page's blocks need what the pages before
it made), each page's blocks in their order. It takes about 5 minutes on a 2-core machine (three trainings of
the tiny model, some 20 commands, a served model).
Three substitutions keep it affordable and offline, each asserted to apply where expected:

- every training (`mlflow run .` of the main entry point) gets the tiny model and data of tests/conftest.py in
  place of its `model`/`data` values (given or default), plus `learning_rate=5e-3` and `max_length=32`, since
  the `auto` learning rate is meant for pretrained models and the default 128 tokens exceed the tiny model's 64
  positions; every other parameter, `epochs` included, is as written;
- the offline data folder `../shared/data/multilingual-sentiments` is the tiny data folder wherever it appears
  (the quick start's `data=` and the line that copies `test.csv` from it);
- `mlflow models serve` listens on a free port instead of 5001 (the curl lines follow it).

To add a block: put its (page, section heading, first line) into RUN, if it can run here, or into SKIP with the
reason it cannot (and the test that covers it instead, if any). A block in neither fails this test, and so does
a page under docs/ with bash blocks that DOCUMENTS does not list: add it there, after the pages whose blocks it
needs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from conftest import REPO_ROOT, free_port, http_service, subprocess_env

DOCS = REPO_ROOT / "docs"
# The pages whose blocks run, in the order they run: the quick start trains version 1, the registry's typical
# flow promotes it and trains versions 2 and 3, scoring and serving load the champion, int8 optimizes it.
DOCUMENTS = [
    "README.md",
    "docs/training.md",
    "docs/tuning.md",
    "docs/registry.md",
    "docs/scoring.md",
    "docs/monitoring.md",
    "docs/serving.md",
    "docs/int8.md",
    "docs/server.md",
    "docs/testing.md",
    "docs/architecture.md",
]
OFFLINE_DATA = "../shared/data/multilingual-sentiments"
README_PORT = "5001"

# Blocks run in DOCUMENTS order, keyed by (page, section heading, first line).
RUN = {
    (
        "README.md",
        "Quick start",
        "mlflow run . -P lang=english -P model=minilm -P data=../shared/data/multilingual-sentiments --env-manager local",
    ),
    ("docs/training.md", "Weights & Biases", "wandb sync --dry-run wandb/offline-run-*"),
    (
        "docs/registry.md",
        "Typical flow",
        'sentiment-flow promote sentiment-english --version 1 --alias champion --reason "first model"',
    ),
    ("docs/registry.md", "Typical flow", "python registry_scripts/status.py sentiment-english"),
    (
        "docs/registry.md",
        "Typical flow",
        "mlflow run . -e promote -P model_name=sentiment-english -P version=3 -P alias=champion -P despite_rollback=true --env-manager local",
    ),
    (
        "docs/scoring.md",
        "Batch scoring",
        "printf 'text\\nWhat a great day!\\nThe meeting is at noon.\\nThis is the worst service ever.\\n' > reviews.csv",
    ),
    (
        "docs/scoring.md",
        "Batch scoring",
        "sentiment-flow score models:/sentiment-english@champion reviews.csv scored.csv",
    ),
    (
        "docs/scoring.md",
        "Batch scoring",
        "mlflow run . -e score -P model_uri=models:/sentiment-english@champion -P input=reviews.csv -P output=scored-run.csv \\",
    ),
    (
        "docs/scoring.md",
        "Batch scoring on Spark",
        "sentiment-flow score models:/sentiment-english@champion reviews.csv scored.parquet --engine spark",
    ),
    (
        "docs/serving.md",
        "Serving",
        "mlflow models serve -m models:/sentiment-english@champion --env-manager local -h 127.0.0.1 -p 5001",
    ),
    ("docs/int8.md", "Speed: int8", "sentiment-flow optimize models:/sentiment-english@champion"),
}
# Blocks that cannot run here, and why.
SKIP = {
    (
        "docs/tuning.md",
        "Tuning",
        "mlflow run . -e tune -P lang=english -P model=minilm -P data=../shared/data/multilingual-sentiments -P trials=20 --env-manager local",
    ): "20 trainings each (hours on this CPU), and a registered version that would renumber the registry page's; "
    "tests/tuning/test_search.py runs `mlflow run . -e tune` and test_shared.py `sentiment-flow tune` on the tiny model",
    (
        "docs/tuning.md",
        "Shared and resumable studies",
        "createdb -h db.internal -U tuner optuna                              # once",
    ): "needs a PostgreSQL server at db.internal; tests/tuning/test_study.py checks the password refusal",
    (
        "docs/monitoring.md",
        "sentiment-flow monitor",
        "sentiment-flow monitor sentiment-english --alias champion --since 7d",
    ): "its exit code depends on what the tiny model scored: tests/monitoring/test_monitor.py runs it on every case",
    (
        "docs/monitoring.md",
        "sentiment-flow monitor",
        "mlflow run . -e monitor -P model_name=sentiment-english --env-manager local --experiment-name sentiment-flow-monitoring",
    ): "as above; tests/monitoring/test_monitor.py checks the entry point passes every option with its default",
    (
        "README.md",
        "Quick start",
        'python -m venv .venv && . .venv/bin/activate && pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install -e ".[offline]" && mlflow run . -P lang=english --env-manager local',
    ): "creates a venv and installs from PyTorch's index and PyPI, then trains distilbert from the Hub: no Hub here; CI (.ci/run) does the install",
    (
        "README.md",
        "Quick start",
        'python -m venv .venv && . .venv/bin/activate && pip install -e ".[offline]" && mlflow run . -P lang=english --env-manager local',
    ): "the GPU machine's install (CUDA torch) and a Hub training",
    (
        "README.md",
        "Quick start",
        'pip install -e ".[offline,dev,server]" && python -m pytest',
    ): "the test suite itself (CI runs it)",
    (
        "docs/training.md",
        "Conda",
        "UV_CONSTRAINT=$PWD/constraints-cpu.txt UV_TORCH_BACKEND=cpu mlflow run . -P lang=english --env-manager uv",
    ): "PyTorch's CPU index is unreachable here; tests/test_packaging.py runs the UV_FIND_LINKS route below",
    (
        "docs/training.md",
        "Conda",
        "UV_CONSTRAINT=$PWD/constraints-cpu.txt UV_FIND_LINKS=/opt/wheels UV_PYTHON_DOWNLOADS=never mlflow run . -P model=minilm -P data=../shared/data/multilingual-sentiments --env-manager uv",
    ): "builds a uv environment (minutes); tests/test_packaging.py runs it on a few rows",
    (
        "docs/training.md",
        "Several GPUs",
        "torchrun --nproc-per-node 4 -m sentiment_flow train --lang english --batch-size 16   # 16 per GPU",
    ): "4 processes training distilbert from the Hub; tests/training/test_distributed.py runs the same launch with 2 CPU processes",
    (
        "docs/registry.md",
        "A shared tracking server",
        "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000        # MLFLOW_TRACKING_USERNAME/PASSWORD if it asks",
    ): "needs the team's server; tests/server/test_server.py runs every command against a real one",
    (
        "docs/scoring.md",
        "Batch scoring on Spark",
        "sentiment-flow score models:/sentiment-english@champion s3a://bucket/reviews/ s3a://bucket/scored.csv --engine spark --spark-master spark://head:7077",
    ): "needs object storage and a Spark cluster; tests/scoring/test_spark.py runs the engine on local[2]",
    (
        "docs/scoring.md",
        "Batch scoring on Spark",
        "spark-submit --master yarn --deploy-mode client \\",
    ): "needs a YARN cluster, a packed environment and object storage; tests/scoring/test_spark.py runs the engine on local[2]",
    (
        "docs/serving.md",
        "sentiment-flow serve",
        "sentiment-flow serve models:/sentiment-english@champion --port 5001",
    ): "a server that runs until stopped; tests/serving/test_serve.py and tests/test_serving.py start the same command",
    (
        "docs/serving.md",
        "Serving",
        "mlflow models build-docker -m models:/sentiment-english@champion -n sentiment-english:champion",
    ): "Docker is not installed on these machines",
    (
        "docs/server.md",
        "Team server",
        'pip install -e ".[server]"',
    ): "a server that runs until stopped; tests/server/test_server.py starts and stops the same command",
    (
        "docs/server.md",
        "Team server",
        "createdb -h db.internal -U mlflow mlflow                            # once",
    ): "needs an external PostgreSQL (tests/server/test_server.py checks the arguments of production mode)",
    (
        "docs/server.md",
        "Team server",
        "read -s MLFLOW_AUTH_ADMIN_PASSWORD && export MLFLOW_AUTH_ADMIN_PASSWORD",
    ): "reads a password from the terminal; tests/server/test_server.py starts the --auth server with one",
    (
        "docs/server.md",
        "Team server",
        "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000 MLFLOW_TRACKING_USERNAME=admin",
    ): "the admin adds users to the team's server; tests/server/test_server_users.py runs add-user against a real one",
    (
        "docs/server.md",
        "Team server",
        "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000",
    ): "the team's server; tests/server/test_server.py logs in the same way",
    (
        "docs/server.md",
        "Team server",
        "mlflow run . -P lang=english -P model=minilm -P data=../shared/data/multilingual-sentiments --env-manager local",
    ): "every command against the team's server: tests/server/test_server.py runs them against a real one",
    (
        "docs/server.md",
        "Webhooks",
        "export MLFLOW_TRACKING_URI=https://mlflow.internal MLFLOW_TRACKING_USERNAME=admin",
    ): "the admin's webhooks on the team's server; tests/server/test_webhooks.py runs these commands against a real one",
    (
        "docs/server.md",
        "Webhooks",
        "read -s WEBHOOK_SECRET && export WEBHOOK_SECRET   # the same secret as `webhook add`",
    ): "a receiver that runs until stopped; tests/server/test_webhooks.py starts the same file with a secret",
    (
        "docs/testing.md",
        "Running the tests",
        'pip install -e ".[offline,dev,server]" && python -m pytest',
    ): "the test suite itself (CI runs it)",
    (
        "docs/testing.md",
        "Running the tests",
        'python -m pytest -m "not slow"',
    ): "the fast part of the test suite, this file's quick tests included (CI runs it within the whole suite)",
}


@dataclass(frozen=True)
class Block:
    document: str  # its page, relative to the checkout: README.md, docs/X.md
    heading: str
    line: int  # of the first command, in its page
    text: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.document, self.heading, self.text.splitlines()[0]

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def sections(markdown: str) -> list[tuple[str, str, int, list[str]]]:
    """The fenced blocks and headings of `markdown`, in order: ("fence", info string, line, its lines, dedented
    to the fence's indentation) or ("heading", its text, line, [its `#`s]). A `# comment` inside a fence is no
    heading; a fence indented under a list item is a fence too."""
    found, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            body = textwrap.dedent("\n".join(lines[i + 1 : end])).splitlines()
            found.append(("fence", stripped[3:].strip(), i + 2, body))
            i = end
        elif match := re.match(r"(#{1,6}) (.*)", lines[i]):
            found.append(("heading", match[2].strip(), i + 1, [match[1]]))
        i += 1
    return found


def bash_blocks(markdown: str, document: str = "README.md") -> list[Block]:
    """The ```bash blocks of `markdown` (the page `document`), in order, each with the heading of its section."""
    blocks, heading = [], ""
    for kind, text, line, body in sections(markdown):
        if kind == "heading":
            heading = text
        elif text == "bash":
            blocks.append(Block(document, heading, line, "\n".join(body)))
    return blocks


def all_blocks() -> list[Block]:
    """Every ```bash block of the DOCUMENTS, in the order they run."""
    return [block for name in DOCUMENTS for block in bash_blocks((REPO_ROOT / name).read_text(), name)]


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [REPO_ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_every_block_is_run_or_listed_with_a_reason():
    blocks = all_blocks()
    keys = [block.key for block in blocks]
    unclassified = [f"{b.where} {b.key}" for b in blocks if b.key not in RUN and b.key not in SKIP]
    assert unclassified == [], "add these blocks to RUN or SKIP in tests/test_readme.py"
    assert sorted(RUN | set(SKIP)) == sorted(keys), "RUN/SKIP name blocks the pages no longer have"
    assert len(set(keys)) == len(keys), "two blocks share a key: give one another first line or section"


def test_every_page_with_bash_blocks_is_replayed():
    unlisted = [
        str(page.relative_to(REPO_ROOT))
        for page in pages()
        if str(page.relative_to(REPO_ROOT)) not in DOCUMENTS and bash_blocks(page.read_text())
    ]
    assert unlisted == [], "add these pages to DOCUMENTS in tests/test_readme.py, after the pages they need"
    assert len(set(DOCUMENTS)) == len(DOCUMENTS)
    missing = [name for name in DOCUMENTS if not (REPO_ROOT / name).is_file()]
    assert missing == [], "DOCUMENTS names pages that are gone"


def test_bash_blocks_finds_indented_fences_and_their_headings():
    markdown = (
        "# Top\n\n## Spark\n\n- on a cluster:\n\n  ```bash\n  spark-submit \\\n    score\n  ```\n\n"
        "```bash\necho one\n# a comment, no heading\necho two\n```\n\n```python\nprint()\n```\n"
    )
    blocks = bash_blocks(markdown, "docs/x.md")
    assert [(b.key, b.line) for b in blocks] == [
        (("docs/x.md", "Spark", "spark-submit \\"), 8),
        (("docs/x.md", "Spark", "echo one"), 13),
    ]
    assert blocks[0].text == "spark-submit \\\n  score"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (markup removed) in lower case, punctuation other than `-` and
    `_` dropped, each space a `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings; a repeated one gets -1, -2, ... as on GitHub."""
    seen: Counter[str] = Counter()
    found = set()
    for kind, text, _, _ in sections(markdown):
        if kind == "heading":
            base = slug(text)
            found.add(f"{base}-{seen[base]}" if seen[base] else base)
            seen[base] += 1
    return found


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def broken_links(page: Path) -> list[str]:
    """The relative links of `page` (outside code) whose file, or whose `#anchor` in it, does not exist."""
    broken, lines = [], page.read_text().splitlines()
    fenced = {
        number
        for kind, _, line, body in sections(page.read_text())
        if kind == "fence"
        for number in range(line - 1, line + len(body) + 1)
    }
    for number, line in enumerate(lines, 1):
        if number in fenced:
            continue
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # https:, mailto:: not this checkout's
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}:{number} {target}: no such file")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file.read_text())):
                broken.append(f"{page.name}:{number} {target}: no such heading")
    return broken


def test_every_relative_link_leads_to_a_file_and_heading():
    assert [problem for page in pages() for problem in broken_links(page)] == []


def test_broken_links_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# Speed: int8\n\n## Audit trail, rollback and concurrency\n\n## Audit trail, rollback and concurrency\n"
    )
    page = tmp_path / "README.md"
    page.write_text(
        "# Quick start\n\n"
        "[ok](docs/a.md#speed-int8) [ok](docs/a.md#audit-trail-rollback-and-concurrency-1) [ok](#quick-start) "
        "[web](https://example.com/x.md) `[code](nowhere.md)`\n"
        "[gone](docs/b.md) [old anchor](docs/a.md#conda) [here](#training)\n"
        "```\n[in a fence](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        "README.md:4 docs/b.md: no such file",
        "README.md:4 docs/a.md#conda: no such heading",
        "README.md:4 #training: no such heading",
    ]


# A file of this repository named in prose: `sentiment_flow/store.py`, tests/int8/test_optimize.py, ...
NAMED_FILE = re.compile(r"(?<![\w/.])((?:sentiment_flow|tests|benchmarks|registry_scripts|docs)/[\w./-]*\w)")


def missing_files(page: Path) -> list[str]:
    """The repository paths `page` names (in prose or code) that do not exist; a `{a,b}` brace list is skipped."""
    return [
        f"{page.name}: {name}"
        for name in sorted(set(NAMED_FILE.findall(page.read_text())))
        if "{" not in name and not (REPO_ROOT / name).exists()
    ]


def test_every_file_the_pages_name_exists():
    # Modules and tests moved when the package became stage folders; a page naming the old path misleads.
    assert [problem for page in pages() for problem in missing_files(page)] == []


def test_missing_files_finds_a_moved_module(tmp_path):
    page = tmp_path / "probe.md"
    page.write_text("See `sentiment_flow/scoring.py` and tests/test_architecture.py, not sentiment_flow/store.py.\n")
    assert missing_files(page) == ["probe.md: sentiment_flow/scoring.py"]


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


def test_substitution_replaces_only_the_model_and_data_of_trainings():
    text, trainings = substitute(
        "mlflow run . -P lang=english -P model=minilm -P data=../shared/data/multilingual-sentiments --env-manager local\n"
        "mlflow run . -P lang=english -P epochs=1 --env-manager local   # note\n"
        "mlflow run . -e promote -P model_name=m -P version=3 --env-manager local\n"
        "cp ../shared/data/multilingual-sentiments/english/test.csv test.csv",
        Path("/m"),
        Path("/d"),
        9,
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
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, dest / name)
    return dest


def run_block(text: str, cwd: Path, log: Path, where: str) -> str:
    """Run a block (of the page and line `where`) as one bash script that stops at the first failing command;
    returns its stdout."""
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", text],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    with log.open("a") as handle:
        handle.write(f"$ {text}\n{done.stdout}{done.stderr}\n")
    assert done.returncode == 0, f"{where}: block failed (exit {done.returncode}):\n{text}\n---\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.mark.slow
def test_blocks_run_in_order_on_a_fresh_store(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    checkout = checkout_copy(tmp_path / "sentiment_flow")
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("PYTHONPATH", str(checkout))  # the copy's code, also in `mlflow run` and `sentiment-flow`
    # The README's own store: MLflow's default and this project's (sqlite:///mlflow.db in the folder).
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("WANDB_DIR")  # W&B writes ./wandb/offline-run-* there, as the README says (WANDB_MODE=offline)
    port, log = free_port(), tmp_path / "readme.log"
    trainings, outputs = 0, {}
    for block in all_blocks():
        if block.key in SKIP:
            continue
        text, count = substitute(block.text, tiny_model_dir, tiny_data_dir, port)
        trainings += count
        if text.startswith("mlflow models serve"):
            serve, rest = text.split("\n", 1)  # the server runs until stopped; the curl lines ask it
            with http_service(shlex.split(serve), f"http://127.0.0.1:{port}", "/ping", tmp_path / "serve.log"):
                outputs[block.key] = run_block(rest, checkout, log, block.where)
        else:
            outputs[block.key] = run_block(text, checkout, log, block.where)

    # The quick start's training and the typical flow's two: "version 3" is the third, as docs/registry.md says.
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
        ("Default", "main", "FINISHED"): 3,
        ("Default", "promote", "FINISHED"): 4,
        ("Default", "rollback", "FINISHED"): 1,
        ("Default", None, "FINISHED"): 1,
        ("sentiment-flow-scoring", None, "FINISHED"): 4,
        ("sentiment-flow-scoring", "score", "FINISHED"): 2,
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
    served = outputs[next(key for key in RUN if key[:2] == ("docs/serving.md", "Serving"))]
    assert served.count('{"predictions": [{"label": ') == 3, served
