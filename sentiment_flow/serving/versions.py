"""The served model versions: one loaded and checked with the canary texts, the one serving now (swapped
atomically, the old one retired when its last request ends), and the alias follower that swaps them.

`mlflow models serve -m models:/NAME@champion` resolves the alias once, at start; here a thread checks it every
`poll_seconds` (and at once on `AliasFollower.wake`, the hook for a registry webhook), loads the version it
points at beside the one serving, and swaps only if it loads and answers the canary texts.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PyFuncModel

from sentiment_flow.config import CANARY_TEXTS, INPUT_COLUMN, ServeConfig
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.scoring.scorer import TRANSFORMERS, canary_answers, model_kind
from sentiment_flow.serving.batching import Batcher

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Served:
    """One loaded version: `model` is the PyFuncModel MLflow's scoring app calls, its predictions batched."""

    version: str  # NAME/VERSION (the response header), or the URI outside the registry
    model: PyFuncModel
    batcher: Batcher
    in_flight: int = 0  # requests leased and not yet answered (guarded by Router's lock)
    retired: bool = field(default=False)

    @property
    def input_schema(self):
        return self.model.metadata.get_input_schema()


class _Batched:
    """The model implementation a PyFuncModel calls after MLflow enforced the signature on a request: a frame
    of strings goes through the batcher, anything else (no rows, lists in a cell, params) to the model alone,
    so that MLflow's answers and errors for those stay exactly what `mlflow models serve` gives."""

    def __init__(self, impl: Any, batcher_of: Callable[[], Batcher]):
        self._impl = impl
        self._batcher_of = batcher_of

    def predict(self, data, params: dict[str, Any] | None = None):
        if params is None and batchable(data):
            return self._batcher_of().predict(data)
        return self._impl.predict(data, params=params)


def batchable(data: Any) -> bool:
    """Whether `data` is a frame of the one input column, at least one row, every value a string."""
    return (
        isinstance(data, pd.DataFrame)
        and list(data.columns) == [INPUT_COLUMN]
        and len(data) > 0
        and all(isinstance(value, str) for value in data[INPUT_COLUMN])
    )


def by_length(predict: Callable[[pd.DataFrame], Any]) -> Callable[[pd.DataFrame], Any]:
    """`predict` of the rows in order of their texts' lengths, answered in the rows' own order: the transformers
    pipeline pads each of its batches to its longest text, so a batch of similar lengths pads least (the int8
    variant sorts by token count itself). An answer that is not one row per input row is returned as it is."""

    def predict_sorted(frame: pd.DataFrame) -> Any:
        order = np.argsort(frame[INPUT_COLUMN].str.len().to_numpy(), kind="stable")
        answer = predict(frame.iloc[order].reset_index(drop=True))
        if not isinstance(answer, pd.DataFrame | pd.Series) or len(answer) != len(order):
            return answer
        return answer.iloc[np.argsort(order)].reset_index(drop=True)

    return predict_sorted


def batch_predict(loaded: PyFuncModel) -> Callable[[pd.DataFrame], Any]:
    """What a batch of `loaded` is scored with: its flavor's predict on an enforced frame, the fp32 pipeline's
    shortest text first (`by_length`)."""
    impl = loaded._model_impl
    return by_length(impl.predict) if model_kind(loaded.metadata) == TRANSFORMERS else impl.predict


def load(model_uri: str, config: ServeConfig) -> Served:
    """`model_uri` (an alias pinned to the version it points at now) loaded, batched and canary-checked.

    Raises UserError when it does not load or does not answer the canary texts.
    """
    import mlflow

    from sentiment_flow.scoring import resolve_model

    load_uri, version = resolve_model(model_uri)
    try:
        loaded = mlflow.pyfunc.load_model(load_uri)
    except Exception as exc:
        raise UserError(f"Could not load {version}: {one_line(exc)}") from exc
    if config.torch_threads and "torch" in sys.modules:  # the transformers flavor (int8 runs without PyTorch)
        sys.modules["torch"].set_num_threads(config.torch_threads)
    impl = loaded._model_impl  # MLflow's flavor wrapper; `predict(data, params=...)` on an enforced frame
    batcher = Batcher(batch_predict(loaded), config.max_batch, config.max_wait_ms, config.queue_limit, version)
    model = PyFuncModel(loaded.metadata, _Batched(impl, lambda: batcher), model_id=loaded.model_id)
    served = Served(version=version, model=model, batcher=batcher)
    try:
        check_canary(served)
    except UserError:
        batcher.close()
        raise
    return served


def check_canary(served: Served) -> None:
    """Raise UserError unless `served` answers one label of LABELS per canary text."""
    try:
        labels, unknown = canary_answers(served.model)
    except Exception as exc:
        raise UserError(f"{served.version} failed the canary texts: {one_line(exc)}") from exc
    if len(labels) != len(CANARY_TEXTS) or unknown:
        raise UserError(
            f"{served.version} failed the canary texts: {len(labels)} answers for {len(CANARY_TEXTS)} texts"
            + (f", unknown labels {unknown}" if unknown else "")
        )


class Router:
    """The version serving now. A request leases it for its whole life; a swap points new requests at the next
    version at once and retires the old one when its last leased request ends."""

    def __init__(self, first: Served):
        self._current = first
        self._lock = threading.Lock()

    @property
    def current(self) -> Served:
        return self._current

    @contextmanager
    def lease(self) -> Iterator[Served]:
        with self._lock:
            served = self._current
            served.in_flight += 1
        try:
            yield served
        finally:
            with self._lock:
                served.in_flight -= 1
                retire = served is not self._current and served.in_flight == 0 and not served.retired
                served.retired = served.retired or retire
            if retire:
                _retire(served)

    def swap(self, new: Served) -> Served:
        """Serve `new` from the next request on; returns the version it replaced."""
        with self._lock:
            old, self._current = self._current, new
            retire = old.in_flight == 0 and not old.retired
            old.retired = old.retired or retire
        if retire:
            _retire(old)
        return old

    def close(self) -> None:
        """Retire the version serving now (at shutdown, after the last request)."""
        with self._lock:
            served, retire = self._current, not self._current.retired
            served.retired = True
        if retire:
            _retire(served)


def _retire(served: Served) -> None:
    served.batcher.close()
    logger.info("Retired %s", served.version)


class AliasFollower:
    """Checks `models:/NAME@ALIAS` every poll_seconds and swaps the router to the version it points at."""

    def __init__(self, model_uri: str, router: Router, config: ServeConfig, loader: Callable[[str], Served]):
        self.model_uri = model_uri
        self.router = router
        self.poll_seconds = config.poll_seconds
        self._loader = loader
        self._failed: str | None = None  # the version that failed to load or the canary: not tried again
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sentiment_flow-alias-follower", daemon=True)

    def start(self) -> AliasFollower:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Check the alias now: the hook for a registry webhook (a model-version-alias event) to call."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def check(self) -> str | None:
        """Swap to the version the alias points at if it moved; returns that version's NAME/VERSION when swapped."""
        from sentiment_flow.store import models_uri, resolve_version

        target = resolve_version(self.model_uri)
        version = f"{target.name}/{target.version}"
        if version in (self.router.current.version, self._failed):
            return None
        logger.info("%s moved to %s; loading it beside %s", self.model_uri, version, self.router.current.version)
        try:
            new = self._loader(models_uri(target.name, target.version))
        except UserError as exc:
            self._failed = version
            logger.error("Not swapping to %s, %s keeps serving: %s", version, self.router.current.version, exc)
            return None
        old = self.router.swap(new)
        self._failed = None
        logger.info("Now serving %s (was %s)", version, old.version)
        return version

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check()
            except Exception:  # a store that does not answer must not stop the serving
                logger.exception("Could not check %s; retrying in %s s", self.model_uri, self.poll_seconds)
