"""train.device_settings: the per-device policy, every branch exercised on a CPU (CUDA answers faked)."""

from __future__ import annotations

import pytest
import torch

from sentiment_flow.config import TrainConfig
from sentiment_flow.errors import UserError
from sentiment_flow.training import device as train


@pytest.fixture
def fake_cuda(monkeypatch):
    """Answer torch's CUDA questions as an H100 would (capability 9.0, bf16): no GPU is needed to run the branch."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    monkeypatch.delenv(train.COMPILE_ENV, raising=False)
    return monkeypatch


def test_cuda_policy_compiles_buckets_fuses_adamw_and_mixes_bf16(fake_cuda):
    settings = train.device_settings("cuda", max_length=128)
    args = settings.training_args
    assert settings.pad_to_multiple_of == train.GPU_PAD_BUCKET == 64
    assert args["torch_compile"] is True and args["optim"] == "adamw_torch_fused"
    assert args["bf16"] is True and args["fp16"] is False and args["tf32"] is True
    assert args["dataloader_num_workers"] > 0 and args["dataloader_pin_memory"] is True


def test_cuda_before_ampere_falls_back_to_fp16_without_tf32(fake_cuda):
    fake_cuda.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    fake_cuda.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 0))
    args = train.device_settings("cuda").training_args
    assert args["bf16"] is False and args["fp16"] is True and args["tf32"] is None


def test_cpu_policy_is_fp32_no_compile_dynamic_padding_with_the_recipes_fused_adamw(monkeypatch):
    monkeypatch.delenv(train.COMPILE_ENV, raising=False)
    settings = train.device_settings("cpu", max_length=128)
    assert settings.pad_to_multiple_of is None
    assert settings.training_args == {
        "bf16": False,
        "fp16": False,
        "tf32": None,
        "torch_compile": False,
        "optim": "adamw_torch_fused",
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
    }


def test_settings_follow_the_device_this_process_sees(fake_cuda):
    assert train.device_settings().device == "cpu"  # this test machine has no GPU
    fake_cuda.setattr(torch.cuda, "is_available", lambda: True)
    assert train.device_type() == "cuda"
    assert train.device_settings().training_args["torch_compile"] is True


@pytest.mark.parametrize("max_length, multiple", [(128, 64), (256, 64), (120, 8), (514, None), (100, None)])
def test_gpu_bucket_divides_max_length_so_padding_never_passes_it(fake_cuda, max_length, multiple):
    # e.g. RoBERTa's 514 positions: padding 514 tokens up to 576 would index past the position embeddings.
    assert train.device_settings("cuda", max_length=max_length).pad_to_multiple_of == multiple


def test_mps_pads_to_multiples_of_8_without_compile(monkeypatch):
    monkeypatch.delenv(train.COMPILE_ENV, raising=False)
    settings = train.device_settings("mps", max_length=128)
    assert settings.pad_to_multiple_of == 8 and settings.training_args["torch_compile"] is False


@pytest.mark.parametrize("value, device, compiled", [("0", "cuda", False), ("1", "cpu", True), ("", "cuda", True)])
def test_compile_env_overrides_the_device_default(fake_cuda, value, device, compiled):
    fake_cuda.setenv(train.COMPILE_ENV, value)
    assert train.device_settings(device).training_args["torch_compile"] is compiled


def test_compile_env_refuses_anything_but_0_or_1(monkeypatch):
    monkeypatch.setenv(train.COMPILE_ENV, "yes")
    with pytest.raises(UserError, match=f"{train.COMPILE_ENV}='yes' is not 0 or 1"):
        train.device_settings("cpu")


@pytest.fixture
def tiny(tiny_data_dir, tiny_model_dir):
    from sentiment_flow.data import load_data, tokenize
    from sentiment_flow.training.model import load_tokenizer_and_model

    tokenizer, model = load_tokenizer_and_model(str(tiny_model_dir))
    cfg = TrainConfig(data=str(tiny_data_dir), max_length=64, batch_size=4)
    return cfg, tokenizer, model, tokenize(load_data(str(tiny_data_dir), "english"), tokenizer, cfg.max_length)


def test_build_trainer_on_cuda_gets_the_gpu_policy_and_bucket_collator(fake_cuda, tiny, tmp_path):
    cfg, tokenizer, model, encoded = tiny
    fake_cuda.setattr(train, "device_type", lambda: "cuda")
    # TrainingArguments refuses tf32 without a GPU; every other field is the CUDA policy's own.
    trainer = train.build_trainer(cfg, model, tokenizer, encoded, str(tmp_path), tf32=None)
    assert trainer.args.torch_compile is True and trainer.args.optim == "adamw_torch_fused" and trainer.args.bf16
    assert trainer.args.dataloader_num_workers > 0

    # Real rows of different lengths, one exactly max_length long: padded to the 64 bucket, no token lost.
    rows = [{k: encoded["train"][i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(3)]
    long_ids = tokenizer(" ".join(["great"] * 200), truncation=True, max_length=cfg.max_length)["input_ids"]
    rows.append({"input_ids": long_ids, "attention_mask": [1] * len(long_ids), "labels": 0})
    assert len(long_ids) == cfg.max_length and min(len(r["input_ids"]) for r in rows) % 64
    batch = trainer.data_collator(rows)
    assert batch["input_ids"].shape[1] == 64
    for i, row in enumerate(rows):
        assert batch["input_ids"][i, : len(row["input_ids"])].tolist() == row["input_ids"]
        assert int(batch["attention_mask"][i].sum()) == len(row["input_ids"])

    short = rows[:3]  # without the long row: still the bucket width, not the longest row's
    assert trainer.data_collator(short)["input_ids"].shape[1] == 64 > max(len(r["input_ids"]) for r in short)


def test_cpu_training_runs_with_dynamic_padding_fp32_and_no_compile(monkeypatch, tiny, tmp_path):
    monkeypatch.delenv(train.COMPILE_ENV, raising=False)
    cfg, tokenizer, model, encoded = tiny
    trainer = train.build_trainer(
        cfg,
        model,
        tokenizer,
        encoded,
        str(tmp_path),
        max_steps=2,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to="none",
        disable_tqdm=True,
    )
    trainer.train()
    assert trainer.state.global_step == 2
    args = trainer.args
    assert args.torch_compile is False and not args.bf16 and not args.fp16
    assert args.dataloader_num_workers == 0 and args.dataloader_pin_memory is False
    assert not isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.optimizer.optimizer.defaults["fused"] is True  # the CPU recipe's optimizer, as before
    rows = [{k: encoded["train"][i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(4)]
    assert trainer.data_collator(rows)["input_ids"].shape[1] == max(len(r["input_ids"]) for r in rows)


@pytest.mark.slow
def test_compiled_training_saves_the_plain_model(monkeypatch, tiny, tmp_path):
    # The CUDA path's torch.compile, run here through dynamo's "eager" backend (no kernels built): what train()
    # logs and save_pretrained writes must be the uncompiled module, its weights without `_orig_mod.` prefixes.
    from safetensors.torch import load_file

    monkeypatch.setenv(train.COMPILE_ENV, "1")
    cfg, tokenizer, model, encoded = tiny
    trainer = train.build_trainer(
        cfg,
        model,
        tokenizer,
        encoded,
        str(tmp_path),
        max_steps=3,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        report_to="none",
        disable_tqdm=True,
        torch_compile_backend="eager",
    )
    trainer.train()
    assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    trainer.model.save_pretrained(tmp_path / "saved")
    keys = load_file(tmp_path / "saved" / "model.safetensors")
    assert keys and not any("_orig_mod" in k for k in keys)
