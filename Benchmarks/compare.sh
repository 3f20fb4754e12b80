#!/usr/bin/env bash
# Runs advkit-bench and the PyTorch peer (../shared/peers/bench_torch.py) one after the other on the same
# machine, then prints the table of images/s and ratios. Absolute times drift on shared machines: quote the
# ratios of one run.
#
#   PEERS=/path/to/peers Benchmarks/compare.sh [threads] [reps]
#
# PEERS is a copy of ../shared/peers whose setup.sh has been run (it needs a writable folder for its .venv);
# default ../shared/peers. The environment is used as it is: run it once with OPENBLAS_CORETYPE as your
# machine has it and once without (env -u OPENBLAS_CORETYPE), and say which.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
reps=${2:-3}
peers=${PEERS:-../shared/peers}
[ -x "$peers/.venv/bin/python" ] || { echo "compare: $peers/.venv is missing: copy ../shared/peers somewhere writable, run its setup.sh, and set PEERS" >&2; exit 1; }
out=${OUT:-bench-results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
swift build -c release --product advkit-bench >&2
weights=$(cd "$peers" && pwd)/models/fmnist_cnn.safetensors
only_torch=forward/torch,input_grad/torch,fgsm/torch,pgd40/torch,pgd40_norandom/torch,deepfool/torchattacks,deepfool/foolbox,cw/torchattacks,train_std/torch,train_pgd7/torch
(cd "$peers" && .venv/bin/python bench_torch.py --weights "$weights" --threads "$threads" --reps "$reps" --only "$only_torch" \
    --out "$out/torch_t$threads.json" > /dev/null)
"$(swift build -c release --show-bin-path)/advkit-bench" --threads "$threads" --reps "$reps" --weights "$weights" \
    --out "$out/advkit_t$threads.json" > /dev/null
python3 Benchmarks/ratio_table.py "$out/torch_t$threads.json" "$out/advkit_t$threads.json"
