"""The int8 variant behind MLflow's pyfunc: an ONNX Runtime session and the tokenizer, text in, label and score out.

Kept apart from optimize.py (which exports and quantizes with torch) so that loading and serving the variant
imports neither torch nor the training stack.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

# Artifact keys of the logged model.
ONNX_ARTIFACT = "onnx"
TOKENIZER_ARTIFACT = "tokenizer"


class Int8Model(mlflow.pyfunc.PythonModel):
    """The same contract as the fp32 transformers-flavor model: a `text` column in; `label` and `score` out.

    Its model_config carries what the fp32 model's does (max_length, truncation always on) plus the batch size
    and the label order of the logits.
    """

    def load_context(self, context):
        import onnxruntime
        from transformers import AutoTokenizer

        config = context.model_config
        self.labels = list(config["labels"])  # logit i is labels[i]
        self.input_column = config["input_column"]
        self.max_length = config["max_length"]
        self.batch_size = config["batch_size"]
        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts[TOKENIZER_ARTIFACT])
        self.session = onnxruntime.InferenceSession(
            context.artifacts[ONNX_ARTIFACT], providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def probabilities(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Softmax probabilities, one row per text in order, columns in `self.labels` order.

        Batches are formed in order of token counts so that each pads little, whatever order the texts came in.
        """
        batch_size = batch_size or self.batch_size
        if not texts:  # the tokenizer fails on an empty list
            return np.empty((0, len(self.labels)), dtype=np.float32)
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        probs = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in rows], truncation=True, max_length=self.max_length, padding=True,
                return_tensors="np",
            )
            (logits,) = self.session.run(None, {name: encoded[name].astype(np.int64) for name in self.input_names})
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs[rows] = exp / exp.sum(axis=1, keepdims=True)
        return probs

    def predict(self, context, model_input, params=None):
        texts = model_input[self.input_column].fillna("").astype(str).tolist()
        probs = self.probabilities(texts)
        return pd.DataFrame(
            {"label": np.asarray(self.labels, dtype=object)[probs.argmax(axis=1)], "score": probs.max(axis=1)}
        )
