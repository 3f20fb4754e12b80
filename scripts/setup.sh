#!/usr/bin/env bash
# Installs what AdvKit needs on Debian (run as root): OpenBLAS, the LLVM OpenMP runtime, zlib, libpng and libjpeg-turbo
# (image folders), and the default dataset (Fashion-MNIST from Debian's dataset-fashion-mnist). Swift itself must
# already be installed.
set -euo pipefail
packages=(libopenblas-dev libomp-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (AdvKit needs Swift 5.10 or later)" >&2; exit 1; }
