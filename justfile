# One recipe per job. `just --list` shows them. Every recipe runs inside ./.venv (made by `setup`).
set shell := ["bash", "-euo", "pipefail", "-c"]

python := ".venv/bin/python"
export HF_HUB_OFFLINE := "1"
export PYTHONUNBUFFERED := "1"

# Train HyperNAS on the default config (NB201, CIFAR-10 labels, 156 cells, CPU profile); extra args are key=value overrides
train *ARGS: setup
    {{python}} -m pipeline.train {{ARGS}}

# Run the test suite (what CI runs)
test *ARGS: setup test-services
    {{python}} -m pytest -q {{ARGS}}

# SLURM + munge for tests/test_cluster.py (private daemons on loopback): apt-installed when missing and root; silent when present
test-services:
    #!/usr/bin/env bash
    set -euo pipefail
    pkgs=(slurmctld slurmd slurm-client munge)
    missing=()
    for tool in sbatch srun scontrol slurmctld slurmd munged mungekey; do
        PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [ "${#missing[@]}" -eq 0 ] && exit 0
    why="SLURM/munge missing (${missing[*]}): tests/test_cluster.py will fail; install ${pkgs[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "test-services: $why as root (e.g. sudo apt-get install -y --no-install-recommends ${pkgs[*]})" >&2
        exit 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "test-services: $why with this system's package manager (no apt-get here)" >&2
        exit 0
    fi
    log=$(mktemp); trap 'rm -f "$log"' EXIT
    install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1; }
    if install || { apt-get update -q >>"$log" 2>&1 && install; }; then
        echo "test-services: installed ${pkgs[*]} (apt) for tests/test_cluster.py"
    else
        echo "test-services: apt-get could not install ${pkgs[*]}: tests/test_cluster.py will fail; apt says:" >&2
        tail -n 20 "$log" >&2
    fi

# Create ./.venv and install the pinned dependencies (idempotent, quiet when already done)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
    [ -f "$stamp" ] && exit 0
    [ -x {{python}} ] || python3 -m venv .venv
    {{python}} -m pip install -q --upgrade pip
    {{python}} -m pip install -q -e ".[dev,distributed,sweep,benchmarks]"
    rm -f .venv/.installed-* && touch "$stamp"

# Prepare data: NB201 table -> Parquet, CIFAR-10 -> WebDataset shards (the trainer also does this when missing)
prepare benchmark_dir="../shared/data/nasbench201" images="../shared/data/cifar10/cifar10_subset.npz": setup
    {{python}} -m data_prep.tables nb201 --benchmark-dir {{benchmark_dir}} --out prepared/tables/nb201.parquet
    {{python}} -m data_prep.images --source {{images}} --out prepared/shards/cifar10 --dataset cifar10

# Predictor quality of a suite (default configs/bench/predictor.yaml; also nb101, darts, ablation, features): tau, top-k, same splits
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

# DDP training under torchrun on this machine (NPROC ranks; gloo on CPUs, nccl on GPUs; rendezvous on 127.0.0.1 only); extra args are key=value overrides
train-ddp NPROC="2" *ARGS: setup
    {{python}} -m pipeline.launch torchrun --nproc_per_node {{NPROC}} pipeline/train.py {{ARGS}}

# DeepSpeed training (CONFIG: configs/deepspeed/zero{0,1,2}.json; NPROC ranks; CPU: accelerator cpu + gloo; rendezvous on 127.0.0.1 only); extra args are key=value overrides
train-deepspeed CONFIG="configs/deepspeed/zero1.json" NPROC="2" *ARGS: setup
    {{python}} -m pipeline.launch deepspeed --num_gpus {{NPROC}} pipeline/train.py --deepspeed_config {{CONFIG}} {{ARGS}}

# Throughput of 2 ranks vs 1 rank for the same work -> results/bench_ddp/summary.md + throughput.png (--deepspeed adds the launcher)
bench-ddp *ARGS: setup
    {{python}} -m benchmarks.ddp {{ARGS}}

# GPU check (one GPU, < 5 min): paper profile in bf16, step time, peak memory, projected 200-epoch wall time
gpu-check *ARGS: setup
    PY={{python}} scripts/gpu_check.sh {{ARGS}}

# Data throughput: sharding / loading images/s (500x375 JPEGs, CIFAR) vs what a HyperNAS update consumes -> results/bench_data/
bench-data *ARGS: setup
    {{python}} -m benchmarks.data {{ARGS}}

# Zero-cost proxies on NB201 CIFAR-10 (>= 2,000-cell seeded sample; --all for 15,625): Spearman/Kendall vs test, cross-check vs NAS-Bench-Suite-Zero, s/arch -> results/bench_zero_cost/
bench-zero-cost *ARGS: setup
    {{python}} -m benchmarks.zero_cost {{ARGS}}

# Label stage: sample architectures of a space without a tabular benchmark, train each briefly on shards, write an arch-accuracy Parquet (args: data_prep.label's)
label *ARGS: setup
    {{python}} -m data_prep.label {{ARGS}}

# End-to-end CPU check of a large space: label 64 MobileNetV3 archs (label stage, 2 workers, 32 px), train HyperNAS on 48 under torchrun with 2 ranks, tau on the other 16 -> prepared/tables/mobilenetv3.parquet, runs/
e2e-mobilenetv3 *ARGS: setup prepare
    {{python}} -m data_prep.label --space mobilenetv3 --set benchmark_width_mult=0.25 --set benchmark_image_size=32 --set benchmark_classes=10 --shards prepared/shards/cifar10 --num-archs 64 --epochs 1 --holdout 500 --train-images 500 --eval-images 500 --image-size 32 --workers 2 --out prepared/tables/mobilenetv3.parquet
    {{python}} -m pipeline.launch torchrun --nproc_per_node 2 pipeline/train.py --config configs/mobilenetv3_cpu.yaml {{ARGS}}

# One HyperNAS step on the largest ViT-base architecture (224 px, 128 images, bf16): --device cuda measures it; on the CPU it is projected from lower settings (~1 min) -> results/bench_vit/
bench-vit *ARGS: setup
    {{python}} -m benchmarks.vit_step {{ARGS}}

# Search under a query budget (NB201, 156 queries, 5 seeds): the config's predictor vs random search, regularized evolution and rf -> results/bench_search/
bench-search *ARGS: setup
    {{python}} -m benchmarks.search {{ARGS}}

# Auxiliary-task signal by target fidelity: HyperNAS-H generated networks ranking NB201 cells -> results/bench_aux_signal/
bench-aux-signal *ARGS: setup
    {{python}} -m benchmarks.aux_signal {{ARGS}}
