# One recipe per job. `just --list` shows them. Every recipe runs inside ./.venv (made by `setup`).
set shell := ["bash", "-euo", "pipefail", "-c"]

python := ".venv/bin/python"
export HF_HUB_OFFLINE := "1"
export PYTHONUNBUFFERED := "1"

# Train HyperNAS on the default config (NB201, CIFAR-10 labels, 156 cells, CPU profile); extra args are key=value overrides
train *ARGS: setup
    {{python}} -m pipeline.train {{ARGS}}

# Run the test suite (what CI runs)
test *ARGS: setup
    {{python}} -m pytest -q {{ARGS}}

# Create ./.venv and install the pinned dependencies (idempotent, quiet when already done)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
    [ -f "$stamp" ] && exit 0
    [ -x {{python}} ] || python3 -m venv .venv
    {{python}} -m pip install -q --upgrade pip
    {{python}} -m pip install -q -e ".[dev,distributed,sweep]"
    rm -f .venv/.installed-* && touch "$stamp"

# Prepare data: NB201 table -> Parquet, CIFAR-10 -> WebDataset shards (the trainer also does this when missing)
prepare benchmark_dir="../shared/data/nasbench201" images="../shared/data/cifar10/cifar10_subset.npz": setup
    {{python}} -m data_prep.tables nb201 --benchmark-dir {{benchmark_dir}} --out prepared/tables/nb201.parquet
    {{python}} -m data_prep.images --source {{images}} --out prepared/shards/cifar10 --dataset cifar10

# Kendall tau (mean ± std over seeds) of NP / HyperNAS-P / HyperNAS at several training sizes, same splits
bench-predictor *ARGS: setup
    {{python}} -m benchmarks.predictor {{ARGS}}

# Time to score the whole NB201 space (hypernetwork off) and step-time ratio HyperNAS / HyperNAS-P
bench-speed *ARGS: setup
    {{python}} -m benchmarks.speed {{ARGS}}

# Regenerate configs/README.md (the documentation of every config key)
docs: setup
    {{python}} -m pipeline.config --doc > configs/README.md

# Ray Tune sweep from a spec (configs/sweeps/*.yaml); e.g. `just sweep configs/sweeps/ablation.yaml --address auto`, `--resume`
sweep SPEC *ARGS: setup
    {{python}} -m pipeline.sweep {{SPEC}} {{ARGS}}

# DDP training under torchrun on this machine (NPROC ranks; gloo on CPUs, nccl on GPUs); extra args are key=value overrides
train-ddp NPROC="2" *ARGS: setup
    .venv/bin/torchrun --nproc_per_node {{NPROC}} pipeline/train.py {{ARGS}}

# DeepSpeed training (CONFIG: configs/deepspeed/zero{0,1,2}.json; NPROC ranks; CPU: accelerator cpu + gloo); extra args are key=value overrides
train-deepspeed CONFIG="configs/deepspeed/zero1.json" NPROC="2" *ARGS: setup
    .venv/bin/deepspeed --num_gpus {{NPROC}} pipeline/train.py --deepspeed_config {{CONFIG}} {{ARGS}}

# Throughput of 2 ranks vs 1 rank for the same work -> results/bench_ddp/summary.md + throughput.png (--deepspeed adds the launcher)
bench-ddp *ARGS: setup
    {{python}} -m benchmarks.ddp {{ARGS}}

# GPU check (one GPU, < 5 min): paper profile in bf16, step time, peak memory, projected 200-epoch wall time
gpu-check *ARGS: setup
    PY={{python}} scripts/gpu_check.sh {{ARGS}}
