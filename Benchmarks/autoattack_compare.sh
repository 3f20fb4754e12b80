#!/usr/bin/env bash
# Issue #14's speed criterion: AutoAttack "standard" in AdvKit against torchattacks 3.5.1's AutoAttack, on the
# reference CNN, the first 1,024 Fashion-MNIST test images, L-inf eps 0.1, 2 threads, seed 0, run in turn
# (torchattacks, then AdvKit) `repeats` times in the same session. Three comparisons from the same runs:
#   - the defaults users get: torchattacks' AutoAttack (APGD, APGD-T, FAB at its 10 steps) against AdvKit's
#     (the paper's 100 steps; stronger, and more work);
#   - the same budget at 10 steps (AdvKit's AutoAttack.standard(steps: 10)) and at 100 steps (torchattacks'
#     four attacks at 100 steps through its MultiAttack: "autoattack-paper").
# Prints each pair's wall and CPU seconds, robust accuracies and ratios, their medians, and AdvKit's seconds per
# component. One repeat takes about 7 minutes on 2 idle cores.
#
#   PEERS=/path/to/peers Benchmarks/autoattack_compare.sh [repeats] [scratch-path]
#
# PEERS is a copy of ../shared/peers whose setup.sh has run (torch + torchattacks in $PEERS/.venv). A shared
# machine stretches wall time (torchattacks' thread pool far more than AdvKit's under load): quote a run whose
# load averages, printed per pair, are low, and the CPU-second ratio beside the wall one.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
scratch=${2:-}
out=${OUT:-bench-results}
mkdir -p "$out"
exec python3 scripts/crosscheck/autoattack.py --only autoattack,autoattack-10,autoattack-paper --repeat "$repeats" \
    ${scratch:+--scratch-path "$scratch"} --out "$out/autoattack_compare.json"
