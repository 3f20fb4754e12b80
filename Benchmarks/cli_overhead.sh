#!/usr/bin/env bash
# `advkit attack` end to end against advkit-bench's in-process PGD-40 on the same images (issue #18: the command
# line within 10% of the library). Both run the same work: the reference CNN (../shared/peers' fmnist_cnn weights),
# the first N Fashion-MNIST test images, PGD L-inf eps 0.1, alpha 0.01, 40 steps, random start, seed 0, batch 128.
#
#   Benchmarks/cli_overhead.sh [threads] [repetitions] [images]
#
# advkit-bench times `PGD.generate` in its process (median of --reps passes after a warm-up batch); the command is
# timed from outside, start-up to exit, with everything it does: reading the gzip'd IDX files and the model, the
# clean and adversarial predictions, per-image norms, writing the images (.idx) and the JSON. The two alternate
# (bench, command, bench, command, ...) so that a change in the machine's load hits both. Wall and CPU (user +
# system) seconds are printed for each run and as medians, and the ratio command / bench for both.
# SCRATCH: the SwiftPM scratch folder (default .build). WEIGHTS: the model (default the peers' fmnist_cnn).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
reps=${2:-3}
n=${3:-1024}
scratch=${SCRATCH:-.build}
weights=${WEIGHTS:-../shared/peers/models/fmnist_cnn.safetensors}
[ -f "$weights" ] || { echo "cli_overhead: $weights is missing (set WEIGHTS)" >&2; exit 1; }
swift build -c release --product advkit --scratch-path "$scratch" >&2
swift build -c release --product advkit-bench --scratch-path "$scratch" >&2
bin=$(swift build -c release --scratch-path "$scratch" --show-bin-path)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
timefmt='%e %U %S'
for r in $(seq 1 "$reps"); do
    "$bin/advkit-bench" --threads "$threads" --n "$n" --reps 3 --weights "$weights" --only pgd40 --out "$tmp/bench$r.json" \
        > /dev/null 2> "$tmp/bench$r.log"
    /usr/bin/time -f "$timefmt" -o "$tmp/cli$r.time" "$bin/advkit" attack --model "$weights" --limit "$n" --threads "$threads" \
        --attack pgd --eps 0.1 --alpha 0.01 --steps 40 --seed 0 --batch-size 128 --quiet \
        --out "$tmp/adv$r.idx" --json "$tmp/cli$r.json" > "$tmp/cli$r.out"
done
python3 - "$tmp" "$reps" "$n" "$threads" <<'EOF'
import json, statistics, sys
tmp, reps, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bench, cli = [], []
for r in range(1, reps + 1):
    w = json.load(open(f"{tmp}/bench{r}.json"))["workloads"]["pgd40/advkit"]
    passes = w["passes_per_rep"]
    bench.append((w["median_s"] / passes, (w["cpu_user_s_median"] + w["cpu_sys_s_median"]) / passes, w["robust_accuracy"]))
    wall, user, sys_ = map(float, open(f"{tmp}/cli{r}.time").read().split()[-3:])
    c = json.load(open(f"{tmp}/cli{r}.json"))
    cli.append((wall, user + sys_, c["robust_accuracy"]))
print(f"PGD-40 on {n} images, {threads} threads, {reps} alternating runs (CPU = user + system seconds)")
print("| run | advkit-bench wall s | CPU s | advkit attack wall s | CPU s | robust acc bench / cli |")
print("|---|---|---|---|---|---|")
for r, (b, c) in enumerate(zip(bench, cli), 1):
    print(f"| {r} | {b[0]:.3f} | {b[1]:.3f} | {c[0]:.3f} | {c[1]:.3f} | {b[2]*100:.2f}% / {c[2]*100:.2f}% |")
bw, bc = statistics.median(b[0] for b in bench), statistics.median(b[1] for b in bench)
cw, cc = statistics.median(c[0] for c in cli), statistics.median(c[1] for c in cli)
print(f"| median | {bw:.3f} | {bc:.3f} | {cw:.3f} | {cc:.3f} | |")
print(f"advkit attack / advkit-bench: wall {cw / bw:.3f}, CPU {cc / bc:.3f} (target: at most 1.10)")
EOF
