"""Cross-request batching: the texts of concurrent requests gathered into one model call, each request handed back
exactly its own rows, and a queue limit that answers "busy" instead of growing.

`mlflow models serve` scores each request on its own (mlflow/mlflow#8007): under many small concurrent requests
the model runs one tiny batch per request. Here a worker thread per served version takes the oldest request and
the others queued, up to `max_batch` texts, scores them in one call and splits the answer.

It waits only for requests the server has already received: the app announces each request (`arriving`) before
parsing it, and the worker holds a batch, at most `max_wait_ms`, while announced requests are still being parsed.
A lone request waits for nothing; 32 clients whose requests arrive together (as a closed loop's do, the moment
their previous answers go out) make one batch, not a first batch of the few parsed quickest and a second of the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1  # what a 503 asks the client to wait: a queue of small requests drains in well under that


class Overloaded(MlflowException):
    """The queue limit is reached: MLflow's TEMPORARILY_UNAVAILABLE, answered as 503 with a Retry-After."""

    def __init__(self, limit: int):
        super().__init__(
            f"The server is busy: {limit} texts are already waiting to be scored (--queue-limit). "
            f"Retry after {RETRY_AFTER_SECONDS} s.",
            error_code=TEMPORARILY_UNAVAILABLE,
        )


@dataclass
class _Job:
    frame: pd.DataFrame
    future: Future = field(default_factory=Future)


class Batcher:
    """Scores frames of one model with `predict`, several requests' rows per call.

    `predict(frame)` must answer one row per input row (a DataFrame, Series, array or list); a call whose answer
    has another length, or that raises, is repeated for each request alone, so every request gets exactly the
    answer (or the error) it gets when scored alone.
    """

    def __init__(
        self, predict: Callable[[pd.DataFrame], Any], max_batch: int, max_wait_ms: float, queue_limit: int, name: str
    ):
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue_limit = queue_limit
        self._jobs: deque[_Job] = deque()
        self._waiting = 0  # texts in _jobs
        self._arriving = 0  # requests announced by `arriving` that have not reached `predict` (or left) yet
        self._announced = threading.local()  # whether this thread's request is one of them
        self._closed = False
        self._ready = threading.Condition()
        self._worker = threading.Thread(target=self._run, name=f"sentiment_flow-batcher-{name}", daemon=True)
        self._worker.start()

    @property
    def queued(self) -> int:
        """Texts waiting for the worker (not those it is scoring)."""
        return self._waiting

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Announce the request this thread is about to parse: a batch being formed waits for it (up to
        max_wait) until it reaches `predict`, or leaves the block without (refused, or not batchable)."""
        with self._ready:
            self._arriving += 1
            self._announced.value = True
        try:
            yield
        finally:
            with self._ready:
                self._arrived()

    def _arrived(self) -> None:
        """This thread's announced request is no longer on its way (call holding the lock)."""
        if getattr(self._announced, "value", False):
            self._announced.value = False
            self._arriving -= 1
            self._ready.notify_all()

    def predict(self, frame: pd.DataFrame) -> Any:
        """`predict`'s answer for `frame` alone, scored together with whatever else is waiting; raises Overloaded
        when the queue holds `queue_limit` texts already (a request larger than the limit is taken when alone)."""
        job = _Job(frame)
        with self._ready:
            self._arrived()
            if self._closed:
                raise RuntimeError("This model version has been retired; the request should have gone to the next.")
            if self._jobs and self._waiting + len(frame) > self.queue_limit:
                raise Overloaded(self.queue_limit)
            self._jobs.append(job)
            self._waiting += len(frame)
            self._ready.notify()
        return job.future.result()

    def close(self) -> None:
        """Score what is queued, then stop the worker."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._worker.join()

    def _run(self) -> None:
        while True:
            jobs = self._next_batch()
            if not jobs:
                return
            self._score(jobs)

    def _next_batch(self) -> list[_Job]:
        """The oldest jobs, up to max_batch texts (at least one job), once max_batch texts wait, no announced
        request is still on its way, or the oldest has waited max_wait; [] when closed and empty."""
        with self._ready:
            while not self._jobs and not self._closed:
                self._ready.wait()
            deadline = time.monotonic() + self.max_wait
            while self._waiting < self.max_batch and self._arriving > 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            jobs: list[_Job] = []
            rows = 0
            while self._jobs and (not jobs or rows + len(self._jobs[0].frame) <= self.max_batch):
                job = self._jobs.popleft()
                jobs.append(job)
                rows += len(job.frame)
            self._waiting -= rows
            return jobs

    def _score(self, jobs: list[_Job]) -> None:
        if len(jobs) > 1:
            try:
                answer = self._predict(pd.concat([job.frame for job in jobs], ignore_index=True))
                parts = split(answer, [len(job.frame) for job in jobs])
            except Exception:  # each request then gets its own answer or error, alone
                logger.debug("A batch of %d requests failed; scoring each alone", len(jobs), exc_info=True)
                parts = None
            if parts is not None:
                for job, part in zip(jobs, parts):
                    job.future.set_result(part)
                return
        for job in jobs:
            try:
                job.future.set_result(self._predict(job.frame))
            except BaseException as exc:  # noqa: BLE001 - handed to the request's thread, which raises it
                job.future.set_exception(exc)


def split(answer: Any, sizes: list[int]) -> list[Any] | None:
    """`answer` cut into consecutive parts of `sizes` rows, each as the model answers alone (a DataFrame or Series
    indexed from 0); None when it does not have one row per input row."""
    if not hasattr(answer, "__len__") or len(answer) != sum(sizes):
        return None
    parts, start = [], 0
    for size in sizes:
        if isinstance(answer, pd.DataFrame | pd.Series):
            parts.append(answer.iloc[start : start + size].reset_index(drop=True))
        else:
            parts.append(answer[start : start + size])
        start += size
    return parts
