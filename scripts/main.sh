#!/usr/bin/env bash
# The main job on the default dataset (Fashion-MNIST from Debian's dataset-fashion-mnist): installs what is
# needed, builds, trains the reference CNN for one epoch, and attacks it with FGSM and PGD-40 at eps 0.1.
# Outputs go to ${OUT:-./advkit-output}/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${OUT:-advkit-output}
mkdir -p "$out"
swift build -c release --product advkit
bin=$(swift build -c release --show-bin-path)/advkit
"$bin" train --arch cnn --dataset fashion-mnist --epochs 1 --batch-size 64 --lr 1e-3 --seed 0 --out "$out/cnn.safetensors"
"$bin" predict --model "$out/cnn.safetensors" --json "$out/predict.json"
"$bin" attack --model "$out/cnn.safetensors" --attack fgsm --eps 0.1 --out "$out/fgsm.idx" --json "$out/fgsm.json"
"$bin" attack --model "$out/cnn.safetensors" --attack pgd --eps 0.1 --steps 40 --alpha 0.01 --limit 1024 \
    --out "$out/pgd40.idx" --json "$out/pgd40.json"
echo "main job done: model, adversarial images (float32 IDX) and metrics (JSON) in $out/"
