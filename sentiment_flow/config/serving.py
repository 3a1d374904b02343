"""`serve`'s options and their defaults (the click options are made from these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentiment_flow.errors import UserError


@dataclass(frozen=True)
class ServeConfig:
    """How `serve` follows an alias and batches requests; each field is one `serve` option."""

    poll_seconds: float = field(
        default=10.0, metadata={"help": "Seconds between checks of a models:/NAME@ALIAS URI's alias."}
    )
    max_batch: int = field(
        default=128,
        metadata={
            "help": "Most texts of concurrent requests scored in one model call (128: two 64-text requests share a "
            "call; benchmarks/results/serving.md)."
        },
    )
    max_wait_ms: float = field(
        default=20.0,
        metadata={
            "help": "Most milliseconds a batch waits for requests the server has already received and is still "
            "reading to join it; it never waits for requests not yet sent, so a lone request waits for nothing "
            "(benchmarks/results/serving.md)."
        },
    )
    queue_limit: int = field(
        default=1024,
        metadata={
            "help": "Texts (and requests) waiting at most; beyond it requests get 503 with a Retry-After. The "
            "default holds 16 clients' 64-text requests."
        },
    )

    torch_threads: int = field(
        default=0,
        metadata={
            "help": "PyTorch threads per model call (the fp32 model; int8 uses one per core itself); 0: PyTorch's "
            "default, one per core. On a host shared with other busy jobs, 1 avoids oversubscribing the cores "
            "(benchmarks/results/serving.md)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("poll_seconds", "max_batch", "queue_limit"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be more than 0, got {getattr(self, name)}.")
        for name in ("max_wait_ms", "torch_threads"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}.")
