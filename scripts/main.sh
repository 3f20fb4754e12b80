#!/usr/bin/env bash
# The main job on the default dataset (Fashion-MNIST from Debian's dataset-fashion-mnist): installs what is
# needed, builds, and runs `advkit evaluate --quick`: trains the reference CNN and each defense (cached in
# advkit-report/models/), attacks every defense white-box and black-box, and writes the report to
# ${OUT:-advkit-report}/ (report.md, report.html, results.json, SVG figures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product advkit
bin=$(swift build -c release --show-bin-path)/advkit
"$bin" evaluate --quick --dataset fashion-mnist --out "${OUT:-advkit-report}"
