"""The int8 variant behind MLflow's pyfunc: an ONNX Runtime session and the tokenizer, text in, label and score out.

Dynamic int8 quantizes each matrix product's input with one scale for the whole tensor, so a row whose two best
classes are close can change its label (optimize.smooth makes that rarer). Such rows (top-two probability margin
below `fallback_margin`) are scored again by the fp32 graph carried beside the int8 one: on two MiniLMs that was
2.5 % and 8.7 % of test rows, and it brought label agreement with fp32 from 99.3 % / 98.5 % to 99.8 % / 99.9 %
(benchmarks/results/int8.md).

Kept apart from optimize.py (which exports and quantizes with torch) so that loading and serving the variant
imports neither torch nor the training stack.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

# Artifact keys of the logged model.
ONNX_ARTIFACT = "onnx"
FP32_ARTIFACT = "onnx_fp32"  # the fallback for rows int8 is unsure of
TOKENIZER_ARTIFACT = "tokenizer"


class Int8Model(mlflow.pyfunc.PythonModel):
    """The same contract as the fp32 transformers-flavor model: a `text` column in; `label` and `score` out.

    Its model_config carries what the fp32 model's does (max_length, truncation always on) plus the batch size,
    the label order of the logits and the fallback margin (0: int8 alone).
    """

    def load_context(self, context):
        import onnxruntime
        from transformers import PreTrainedTokenizerFast  # AutoTokenizer would import torch: 1.4 s per load

        config = context.model_config
        self.labels = list(config["labels"])  # logit i is labels[i]
        self.input_column = config["input_column"]
        self.max_length = config["max_length"]
        self.batch_size = config["batch_size"]
        self.fallback_margin = float(config.get("fallback_margin", 0.0))
        # The saved tokenizer.json alone: the same tokens as the model's own tokenizer class (checked on MiniLM,
        # 1,604 texts in four scripts) without its Python class.
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(context.artifacts[TOKENIZER_ARTIFACT])

        def session(key):
            return onnxruntime.InferenceSession(context.artifacts[key], providers=["CPUExecutionProvider"])

        self.session = session(ONNX_ARTIFACT)
        self.fp32_session = session(FP32_ARTIFACT) if self.fallback_margin > 0 else None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.token_type_ids = "token_type_ids" in self.input_names  # BERT's graph takes them; DistilBERT's not

    def probabilities(self, texts: list[str], batch_size: int | None = None, lengths=None) -> np.ndarray:
        """Softmax probabilities, one row per text in order, columns in `self.labels` order. `lengths`: the
        texts' token counts (truncated at max_length), if the caller has them already."""
        probs, _ = self.scored(texts, batch_size, lengths)
        return probs

    def scored(self, texts: list[str], batch_size: int | None = None, lengths=None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (as `probabilities`) and the indices of the rows the fp32 graph scored again."""
        batch_size = batch_size or self.batch_size
        if not texts:  # the tokenizer fails on an empty list
            return np.empty((0, len(self.labels)), dtype=np.float32), np.zeros(0, dtype=np.int64)
        if lengths is None:
            lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        lengths = np.asarray(lengths)
        probs = self._run(self.session, texts, batch_size, lengths)
        if self.fp32_session is None:
            return probs, np.zeros(0, dtype=np.int64)
        top_two = np.sort(probs, axis=1)[:, -2:]
        unsure = np.flatnonzero(top_two[:, 1] - top_two[:, 0] < self.fallback_margin)
        if unsure.size:
            probs[unsure] = self._run(self.fp32_session, [texts[i] for i in unsure], batch_size, lengths[unsure])
        return probs, unsure

    def _run(self, session, texts: list[str], batch_size: int, lengths: np.ndarray) -> np.ndarray:
        """`session`'s softmax for every text. Batches are formed in order of token counts (`lengths`) so that
        each pads little, whatever order the texts came in."""
        probs = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in rows], truncation=True, max_length=self.max_length, padding=True,
                return_tensors="np", return_token_type_ids=self.token_type_ids,
            )
            (logits,) = session.run(None, {name: encoded[name].astype(np.int64) for name in self.input_names})
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs[rows] = exp / exp.sum(axis=1, keepdims=True)
        return probs

    def predict(self, context, model_input, params=None):
        texts = model_input[self.input_column].fillna("").astype(str).tolist()
        probs = self.probabilities(texts)
        return pd.DataFrame(
            {"label": np.asarray(self.labels, dtype=object)[probs.argmax(axis=1)], "score": probs.max(axis=1)}
        )
