"""What the Spark engine reads and writes: inputs on any path Spark reads (CSV as the local engine reads it, or
Parquet), and OUTPUT published from a hidden partial folder once every row is written."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from sentiment_flow.config import ScoreConfig
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.scoring.inputs import check_csv, is_parquet

# RFC 4180 as the local scorer reads and writes it: a quote inside a field doubled, newlines inside quotes.
CSV_OPTIONS = {"header": True, "multiLine": True, "quote": '"', "escape": '"'}


# Spark's CSV writer strips every field's leading and trailing spaces unless told not to: keep them as read.
CSV_WRITE_OPTIONS = {
    **{k: v for k, v in CSV_OPTIONS.items() if k != "multiLine"},
    "ignoreLeadingWhiteSpace": False,
    "ignoreTrailingWhiteSpace": False,
}


# What Spark's writer ends lines with (its default lineSep), and so how the written output is read back.
WRITTEN_LINES = {"encoding": "utf-8", "lineSep": "\n"}


def read(spark, path: str, csv: dict[str, str], like: str | None = None):
    """A DataFrame of `path`, CSV (read with CSV_OPTIONS and `csv`'s) or Parquet by the name of `like` (default
    `path`) or of its part files."""
    from pyspark.errors import AnalysisException

    try:
        if is_csv(spark, like or path):
            # Spark reads an empty unquoted field as null; the local scorer (and pandas) as "": the same rows.
            return spark.read.options(**CSV_OPTIONS, **csv, mode="FAILFAST").csv(path).na.fill("")
        return spark.read.parquet(path)
    except AnalysisException as exc:
        raise UserError(
            f"Could not read {path!r}: {first_line(exc)}. Pass a CSV or Parquet file, or a folder of them, "
            "that exists and that you may read."
        ) from None


def check_local_csv(spark, input_path: str, config: ScoreConfig) -> dict[str, str]:
    """Spark's CSV options for INPUT (its encoding, and its line ending if it is local), after refusing a local
    CSV that the local engine would refuse, in its words (`check_csv`): Spark's own parser would score it,
    invalid bytes replaced by U+FFFD. A remote INPUT is read as Spark reads it."""
    options = {"encoding": config.encoding}
    if not _is_local(input_path) or not is_csv(spark, input_path):
        return options
    given = Path(urlsplit(input_path).path)
    files = sorted(p for p in given.iterdir() if _is_part(p) and ".csv" in p.suffixes) if given.is_dir() else [given]
    files = [f for f in files if f.is_file()]  # a missing INPUT: Spark names it
    for file in files:
        check_csv(file, config)
    if files:
        options["lineSep"] = _line_ending(files[0], config)
    return options


def _line_ending(path: Path, config: ScoreConfig) -> str:
    """The line ending (LF, CRLF or CR) after the header of the CSV `path`. Told none, Spark guesses one and also
    turns a CRLF inside a quoted field into LF, where the local engine keeps the field as written."""
    from pandas.io.common import get_handle

    with get_handle(path, "rb", compression="infer", is_text=False) as handles:
        head = handles.handle.read(1 << 16).decode(config.encoding, errors="replace")  # decodable: check_csv read it
    ending = re.search(r"\r\n|\r|\n", head)
    return ending.group() if ending else "\n"


def _is_part(path: Path) -> bool:
    """A data file of a folder Spark reads: Hadoop skips names starting with . or _ (_SUCCESS, .crc files)."""
    return not path.name.startswith((".", "_"))


def is_csv(spark, path: str) -> bool:
    """CSV by the name (.csv, .csv.gz, ...), or for a local folder by its part files' names; else Parquet."""
    name = urlsplit(path).path.rstrip("/")
    if ".csv" in Path(name).suffixes:
        return True
    if is_parquet(name) or not _is_local(path) or not Path(name).is_dir():
        return False
    parts = [p for p in Path(name).iterdir() if _is_part(p)]
    return any(".csv" in p.suffixes for p in parts)


def first_line(exc: BaseException) -> str:
    """A Spark/Java error's first line and its root cause's (the JVM stack traces between them left out)."""
    head = str(getattr(exc, "java_exception", None) or exc).strip().splitlines()[0]  # not py4j's "while calling o63"
    causes = [line.removeprefix("Caused by: ") for line in str(exc).splitlines() if line.startswith("Caused by: ")]
    return one_line(head + (f" ({causes[-1]})" if causes else ""))


def literal(path: str) -> str:
    """`path` with Hadoop's glob characters escaped: read back as named (an OUTPUT such as `out[1]` is no pattern)."""
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", path)


def _is_local(path: str) -> bool:
    return urlsplit(path).scheme in ("", "file")


def absolute(path: str) -> str:
    """A local path made absolute here: Spark resolves a relative one against its JVM's folder, which is where
    the session started, not necessarily this process's current folder."""
    return os.path.abspath(path) if not urlsplit(path).scheme else path


class Output:
    """OUTPUT and its hidden partial folder beside it: on a local disk through the OS (a rename is atomic and
    still works after an interrupt stopped the JVM), elsewhere (s3a://, hdfs://) through Hadoop's FileSystem."""

    def __init__(self, spark, path: str):
        self.path = absolute(path.rstrip("/"))
        self.local = Path(urlsplit(self.path).path) if _is_local(self.path) else None
        if self.local is None:
            jvm = spark.sparkContext._jvm
            self.hadoop = jvm.org.apache.hadoop.fs.Path
            self.fs = self.hadoop(self.path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def exists(self, path: str | None = None) -> bool:
        path = path or self.path
        return Path(urlsplit(path).path).exists() if self.local else self.fs.exists(self.hadoop(path))

    @contextmanager
    def partial(self) -> Iterator[str]:
        """A new hidden path beside OUTPUT, removed afterwards whatever happened (published, it is gone)."""
        head, _, name = self.path.rpartition("/")
        # No glob characters in its name: Spark's multiLine CSV reader globs each part file's path again.
        name = "." + re.sub(r"[][{}*?\\]", "_", name) + f".{uuid.uuid4().hex[:8]}.partial"
        partial = f"{head}/{name}" if head else name
        try:
            yield partial
        finally:
            if self.local:
                shutil.rmtree(urlsplit(partial).path, ignore_errors=True)
            elif self.exists(partial):
                self.fs.delete(self.hadoop(partial), True)

    def publish(self, partial: str, overwrite: bool) -> None:
        if self.exists():
            if not overwrite:  # written by another job while this one scored
                raise UserError(
                    f"Output {self.path!r} appeared while scoring (another job?) and was left as it is; score "
                    "again with --overwrite to replace it, or to another OUTPUT."
                )
            self._delete(self.path)
        if self.local:
            os.rename(urlsplit(partial).path, self.local)
        elif not self.fs.rename(self.hadoop(partial), self.hadoop(self.path)):
            raise UserError(f"Could not rename the scored {partial!r} to {self.path!r}; it was removed.")

    def _delete(self, path: str) -> None:
        if self.local:
            target = Path(urlsplit(path).path)
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        else:
            self.fs.delete(self.hadoop(path), True)
