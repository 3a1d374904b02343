"""The batcher alone, around a stand-in model: concurrent requests share model calls, each request gets exactly
its own rows in order, a failing batch fails only the request that fails alone, and the queue limit refuses
rather than grows, then recovers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentiment_flow.config import INPUT_COLUMN
from sentiment_flow.serving.batching import Batcher, Overloaded
from sentiment_flow.serving.versions import by_length


class Model:
    """Answers each text with a label derived from it alone, and records the size of every call."""

    def __init__(self, gate: threading.Event | None = None):
        self.calls: list[int] = []
        self.gate = gate  # while unset, calls wait: the queue fills

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.gate:
            self.gate.wait(10)
        self.calls.append(len(frame))
        texts = frame[INPUT_COLUMN]
        if (texts == "bad").any():
            raise ValueError("bad text")
        return pd.DataFrame({"label": [f"label-of-{t}" for t in texts], "score": [len(t) for t in texts]})


def frame(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({INPUT_COLUMN: texts})


def requests_of(sizes: list[int]) -> list[list[str]]:
    """Texts unique across requests, so an answer handed to the wrong request or row shows."""
    return [[f"r{i}t{j}" for j in range(size)] for i, size in enumerate(sizes)]


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=24), max_batch=st.integers(1, 40))
def test_each_concurrent_request_gets_exactly_its_own_rows_in_order(sizes, max_batch):
    model = Model()
    batcher = Batcher(model.predict, max_batch=max_batch, max_wait_ms=2, queue_limit=10_000, name="test")
    requests = requests_of(sizes)
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda texts: batcher.predict(frame(texts)), requests))
    finally:
        batcher.close()
    for texts, answer in zip(requests, answers):
        assert answer["label"].tolist() == [f"label-of-{t}" for t in texts]
        assert answer.index.tolist() == list(range(len(texts)))  # as the model answers the request alone
    # A call holds more than max_batch texts only when one request alone is larger.
    assert all(size <= max(max_batch, max(sizes)) for size in model.calls)
    assert sum(model.calls) == sum(sizes)  # every text scored once: no batch failed and was repeated


def test_concurrent_requests_are_scored_in_one_call():
    model = Model()
    batcher = Batcher(model.predict, max_batch=64, max_wait_ms=500, queue_limit=100, name="test")
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda texts: batcher.predict(frame(texts)), requests_of([1] * 8)))
    finally:
        batcher.close()
    assert len(model.calls) < 8 and max(model.calls) > 1, model.calls


def test_a_lone_request_waits_for_no_one_however_long_max_wait_is():
    model = Model()
    batcher = Batcher(model.predict, max_batch=64, max_wait_ms=5_000, queue_limit=100, name="test")
    try:
        began = time.monotonic()
        with batcher.arriving():
            answer = batcher.predict(frame(["alone"]))
        waited = time.monotonic() - began
    finally:
        batcher.close()
    assert answer["label"].tolist() == ["label-of-alone"]
    assert waited < 1.0, f"a lone request waited {waited:.2f} s"  # 5 s if it waited for max_wait


def test_requests_already_received_join_one_batch_while_they_are_read():
    """8 requests announced together, each read (parsed) for a different time up to 0.2 s: one model call."""
    model = Model()
    batcher = Batcher(model.predict, max_batch=64, max_wait_ms=5_000, queue_limit=100, name="test")
    announced = threading.Barrier(8)

    def request(i: int) -> list[str]:
        with batcher.arriving():
            announced.wait()  # all 8 are on their way before the first is read
            time.sleep(0.025 * i)  # reading the body and parsing it
            return batcher.predict(frame([f"r{i}"]))["label"].tolist()

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(request, range(8)))
    finally:
        batcher.close()
    assert answers == [[f"label-of-r{i}"] for i in range(8)]
    assert model.calls == [8]


def test_a_request_that_leaves_without_scoring_stops_holding_the_batch():
    model = Model()
    batcher = Batcher(model.predict, max_batch=64, max_wait_ms=5_000, queue_limit=100, name="test")
    leave = threading.Event()

    def refused() -> None:  # announced, then refused by the parser: it never reaches predict
        with batcher.arriving():
            leave.wait(10)

    try:
        with ThreadPoolExecutor(2) as pool:
            pending = pool.submit(refused)
            time.sleep(0.1)
            asked = pool.submit(lambda: batcher.predict(frame(["waiting"])))
            time.sleep(0.3)
            assert not asked.done()  # held for the announced request
            leave.set()
            assert asked.result(timeout=2)["label"].tolist() == ["label-of-waiting"]
            pending.result(timeout=2)
    finally:
        batcher.close()


def test_a_failing_request_in_a_batch_fails_alone_and_its_neighbours_get_their_answers():
    model = Model()
    batcher = Batcher(model.predict, max_batch=64, max_wait_ms=300, queue_limit=100, name="test")

    def ask(texts):
        try:
            return batcher.predict(frame(texts))["label"].tolist()
        except ValueError as exc:
            return str(exc)

    try:
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(ask, [["good"], ["bad"], ["fine", "ok"]]))
    finally:
        batcher.close()
    assert answers == [["label-of-good"], "bad text", ["label-of-fine", "label-of-ok"]]


def test_the_queue_limit_refuses_while_full_and_takes_requests_again_once_drained():
    gate = threading.Event()
    model = Model(gate)
    batcher = Batcher(model.predict, max_batch=1, max_wait_ms=0, queue_limit=3, name="test")
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.predict, frame(["a"]))  # taken by the worker, which waits on the gate
            while not first.running() or batcher.queued:
                time.sleep(0.001)
            waiting = [pool.submit(batcher.predict, frame([text])) for text in "bcd"]  # 3 texts queued: the limit
            while batcher.queued < 3:
                time.sleep(0.001)
            with pytest.raises(Overloaded, match="3 texts are already waiting"):
                batcher.predict(frame(["e"]))
            gate.set()
            answers = [future.result(10)["label"].tolist() for future in [first, *waiting]]
        assert answers == [[f"label-of-{t}"] for t in "abcd"]
        assert batcher.predict(frame(["f"]))["label"].tolist() == ["label-of-f"]
    finally:
        gate.set()
        batcher.close()


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(st.text(alphabet="xyz é😀", max_size=30), min_size=1, max_size=40))  # never "bad"
def test_by_length_hands_the_model_texts_shortest_first_and_answers_in_the_rows_order(texts):
    model = Model()
    seen = []

    def predict(batch: pd.DataFrame) -> pd.DataFrame:
        seen.append(batch[INPUT_COLUMN].tolist())
        return model.predict(batch)

    answer = by_length(predict)(frame(texts))
    assert [len(t) for t in seen[0]] == sorted(len(t) for t in texts)
    assert answer["label"].tolist() == [f"label-of-{t}" for t in texts]
    assert answer.index.tolist() == list(range(len(texts)))
