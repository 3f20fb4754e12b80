#!/usr/bin/env bash
# Imported ONNX models against PyTorch in the same run: advkit-bench's onnx-* workloads (the reference CNN's ONNX
# export A/B-timed against the built-in Model(.cnn); full-size ResNet-18 and MobileNetV2 exports), then PyTorch's
# own modules on the same exported models (Benchmarks/bench_onnx_torch.py), then the ratio table with the
# difference between the two PGD-10 adversarial images.
#
#   PEERS=/path/to/peers Benchmarks/onnx_compare.sh [threads] [reps] [full-size reps]
#
# PEERS: a copy of ../shared/peers whose setup.sh has been run (its .venv has torch, torchvision, onnx, onnxruntime);
# default ../shared/peers. ONNX_FULL: the folder of the full-size exports (default ../onnx-full; make them with
# scripts/onnx/make_fixtures.py --full --out-full DIR); a missing model's workloads are skipped. SCRATCH: the
# SwiftPM scratch folder (default .build). The environment is used as it is: run it once with OPENBLAS_CORETYPE
# as your machine has it and once without (env -u OPENBLAS_CORETYPE), and say which. ONLY: a comma list of
# workloads for both sides (default all; e.g. ONLY=onnx-resnet18,onnx-mobilenetv2 skips the CNN's minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
reps=${2:-3}
full_reps=${3:-$reps}
peers=${PEERS:-../shared/peers}
full=${ONNX_FULL:-../onnx-full}
scratch=${SCRATCH:-.build}
python=$peers/.venv/bin/python
[ -x "$python" ] || { echo "onnx_compare: $peers/.venv is missing: copy ../shared/peers somewhere writable, run its setup.sh, and set PEERS" >&2; exit 1; }
out=${OUT:-bench-results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
swift build -c release --product advkit-bench --scratch-path "$scratch" >&2
weights=$(cd "$peers" && pwd)/models/fmnist_cnn.safetensors
rm -rf "$out/onnx-adv"
only=${ONLY:-onnx}
torch_only=()
[ "$only" = onnx ] || torch_only=(--only "$only")
"$(swift build -c release --scratch-path "$scratch" --show-bin-path)/advkit-bench" --threads "$threads" --reps "$reps" \
    --weights "$weights" --only "$only" --onnx-resnet18 "$full/resnet18_cifar.onnx" \
    --onnx-mobilenetv2 "$full/mobilenet_v2_cifar.onnx" --onnx-full-reps "$full_reps" --onnx-adv-out "$out/onnx-adv" \
    --out "$out/advkit_onnx_t$threads.json" > /dev/null
# bench_torch.py's malloc settings (freed tensors stay mapped), and its thread count.
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824 OMP_NUM_THREADS=$threads \
    "$python" Benchmarks/bench_onnx_torch.py --threads "$threads" --reps "$reps" --resnet18 "$full/resnet18_cifar.onnx" \
    --mobilenetv2 "$full/mobilenet_v2_cifar.onnx" --full-reps "$full_reps" "${torch_only[@]}" --advkit-adv "$out/onnx-adv" --out "$out/torch_onnx_t$threads.json" > /dev/null
python3 Benchmarks/onnx_ratio_table.py "$out/torch_onnx_t$threads.json" "$out/advkit_onnx_t$threads.json"
