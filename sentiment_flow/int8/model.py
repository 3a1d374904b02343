"""The int8 variant behind MLflow's pyfunc: an ONNX Runtime session and the tokenizer, text in, label and score out.

int8 rounds each matrix product's input to steps of a scale fixed when the variant was built (calibrated on
validation rows, the same for every row and batch: a text's answer does not depend on the texts scored with it),
so a row whose two best classes are close can get another label than fp32's (smoothing.smooth makes that rarer).
Such rows (top-two probability margin below `fallback_margin`) are scored again by the fp32 graph carried beside
the int8 one: with dynamic int8 on two MiniLMs that was 2.5 % and 8.7 % of test rows, and it brought label
agreement with fp32 from 99.3 % / 98.5 % to 99.8 % / 99.9 %; with static int8 on the first, 2.6 % of rows, from
99.3 % to 100 % (dynamic: benchmarks/results/int8.md; static: docs/int8.md).

Kept apart from build.py and export.py (which export and quantize with torch) so that loading and serving the variant
imports neither torch nor the training stack. The variant is logged as MLflow "model from code": this file itself is
copied into the model and run at load, so it imports nothing from sentiment_flow, and the model's requirements name
only public packages (a serving host builds its environment from them).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

# Artifact keys of the logged model.
ONNX_ARTIFACT = "onnx"
FP32_ARTIFACT = "onnx_fp32"  # the fallback for rows int8 is unsure of
TOKENIZER_ARTIFACT = "tokenizer"


# Most padding a batch may carry, as a share of its tokens: the next text by token count starts a new batch when
# padding the batch to its length would cost more. A request's random texts then run as several short batches, not
# one per core padded to its longest. On MiniLM (2 cores, 40 draws of random English test texts per size) calls of
# 32 texts ran 667 rows/s against 521, of 64 texts 748 against 639, and all 870 sorted ones 1,024 against 1,001.
PADDING_TOLERANCE = 0.1


def similar_lengths(lengths: list[int], per_core: int, batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of similar `lengths`, in order of length: each at most `batch_size` rows and
    `per_core` (a call's rows over the cores, so that every core gets one: the 2.5 % of rows scored again in fp32
    were one batch on one core, 15 % of the variant's time), and padded by at most PADDING_TOLERANCE of its tokens.
    Which rows share a batch does not change their answers: int8's scales are fixed at build."""
    most = max(1, min(batch_size, per_core))
    batches: list[np.ndarray] = []
    start, tokens = 0, 0
    order = np.argsort(lengths, kind="stable")
    for end, row in enumerate(order):
        longest = lengths[row]  # sorted: the batch's longest so far
        if end > start and (
            end - start >= most or (end - start + 1) * longest > (1 + PADDING_TOLERANCE) * (tokens + longest)
        ):
            batches.append(order[start:end])
            start, tokens = end, 0
        tokens += longest
    if len(order):
        batches.append(order[start:])
    return batches


class Int8Model(PythonModel):
    """The same contract as the fp32 transformers-flavor model: a `text` column in; `label` and `score` out.

    Its model_config carries what the fp32 model's does (max_length, truncation always on) plus the batch size,
    the label order of the logits and the fallback margin (0: int8 alone).

    Each call tokenizes its texts once, sorts them by token count and runs the batches on one thread per core,
    each ONNX Runtime call on one thread: at MiniLM's sizes a call spends much of its time in small element-wise
    operations, and on 2 cores one call on two threads ran 945 rows/s against 1,100 for two one-thread calls side
    by side (pre-tokenized batches of 16 and 32). With the tokenizing, the same graph ran 831 rows/s tokenized by
    transformers per batch on ONNX Runtime's threads, 1,070 this way (benchmarks/results/int8.md). Concurrent
    calls (`mlflow models serve` runs requests in threads) share those threads and nothing else that changes:
    the tokenizer's settings are fixed at load.
    """

    def load_context(self, context):
        import onnxruntime
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast  # AutoTokenizer would import torch: 1.4 s per load

        config = context.model_config
        self.labels = list(config["labels"])  # logit i is labels[i]
        self.input_column = config["input_column"]
        self.max_length = config["max_length"]
        self.batch_size = config["batch_size"]
        self.fallback_margin = float(config.get("fallback_margin", 0.0))
        # The saved tokenizer.json alone: the same tokens as the model's own tokenizer class (checked on MiniLM,
        # 1,604 texts in four scripts) without its Python class. Its Rust tokenizer is copied and set to truncate
        # once: transformers' __call__ sets truncation and padding on the shared tokenizer at every call, so two
        # requests at once could get each other's padding.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(context.artifacts[TOKENIZER_ARTIFACT])
        self.tokenizer = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length, direction=tokenizer.truncation_side)
        self.pad_id, self.pad_left = tokenizer.pad_token_id or 0, tokenizer.padding_side == "left"

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1

        def session(key):
            return onnxruntime.InferenceSession(context.artifacts[key], options, providers=["CPUExecutionProvider"])

        self.session = session(ONNX_ARTIFACT)
        self.fp32_session = session(FP32_ARTIFACT) if self.fallback_margin > 0 else None
        self.input_names = [i.name for i in self.session.get_inputs()]
        # The cores this process may run on (Linux); elsewhere (macOS has no sched_getaffinity) all of them.
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.threads = ThreadPoolExecutor(self.cores, thread_name_prefix="sentiment_flow-int8")

    def probabilities(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Softmax probabilities, one row per text in order, columns in `self.labels` order."""
        probs, _ = self.scored(texts, batch_size)
        return probs

    def scored(self, texts: list[str], batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (as `probabilities`) and the indices of the rows the fp32 graph scored again."""
        batch_size = batch_size or self.batch_size
        encodings = self.tokenizer.encode_batch(texts)
        probs = self._run(self.session, encodings, batch_size)
        if self.fp32_session is None:
            return probs, np.zeros(0, dtype=np.int64)
        top_two = np.sort(probs, axis=1)[:, -2:]
        unsure = np.flatnonzero(top_two[:, 1] - top_two[:, 0] < self.fallback_margin)
        if unsure.size:
            probs[unsure] = self._run(self.fp32_session, [encodings[i] for i in unsure], batch_size)
        return probs, unsure

    def _run(self, session, encodings: list, batch_size: int) -> np.ndarray:
        """`session`'s softmax for every encoding, in batches of similar token counts (`similar_lengths`) spread
        over the cores."""
        batches = similar_lengths([len(e.ids) for e in encodings], -(-len(encodings) // self.cores), batch_size)
        probs = np.empty((len(encodings), len(self.labels)), dtype=np.float32)
        for rows, logits in zip(
            batches, self.threads.map(lambda rows: self._logits(session, encodings, rows), batches)
        ):
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs[rows] = exp / exp.sum(axis=1, keepdims=True)
        return probs

    def _logits(self, session, encodings: list, rows: np.ndarray) -> np.ndarray:
        """One ONNX Runtime call on the encodings `rows`, padded to the longest of them."""
        width = max(len(encodings[i].ids) for i in rows)
        feeds = {
            "input_ids": np.full((len(rows), width), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(rows), width), dtype=np.int64),
            "token_type_ids": np.zeros((len(rows), width), dtype=np.int64),
        }
        for row, i in enumerate(rows):
            encoding = encodings[i]
            span = slice(width - len(encoding.ids), width) if self.pad_left else slice(0, len(encoding.ids))
            feeds["input_ids"][row, span] = encoding.ids
            feeds["attention_mask"][row, span] = encoding.attention_mask
            feeds["token_type_ids"][row, span] = encoding.type_ids
        (logits,) = session.run(None, {name: feeds[name] for name in self.input_names})
        return logits

    def predict(self, context, model_input, params=None):
        texts = self.texts(model_input)
        probs = self.probabilities(texts)
        return pd.DataFrame(
            {"label": np.asarray(self.labels, dtype=object)[probs.argmax(axis=1)], "score": probs.max(axis=1)}
        )

    def texts(self, model_input: pd.DataFrame) -> list[str]:
        """The input column as a list of strings. Raises MlflowException INVALID_PARAMETER_VALUE (HTTP 400 when
        served) for no rows or a value that is not a string, which were classified as made-up texts: a null as "",
        a number as its digits, a list as its repr."""
        values = model_input[self.input_column].tolist()
        if not values:
            raise MlflowException.invalid_parameter_value(
                f"No rows to score: send at least one {self.input_column!r} value."
            )
        wrong = [i for i, value in enumerate(values) if not isinstance(value, str)]
        if wrong:
            kinds = sorted({type(values[i]).__name__ for i in wrong})
            raise MlflowException.invalid_parameter_value(
                f"Invalid values in column {self.input_column!r}: all values must be strings; {len(wrong)} of "
                f"{len(values)} are not (rows {wrong[:5]}, of type {', '.join(kinds)})."
            )
        return values


# Run by MLflow as the logged model's code (a module name of its own, no package), not when the package imports it.
if not __package__:
    mlflow.models.set_model(Int8Model())
