#!/usr/bin/env bash
# Builds the fuzz target with libFuzzer and the address sanitizer, then fuzzes each parser for ${1:-60} seconds,
# starting from the seed corpus in corpus/ (committed); inputs it finds go to work/ (not committed). Findings land
# in findings/ as crash-*/timeout-*/oom-* files: replay one with `.build/debug/advkit-fuzz FILE`.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library >&2
mkdir -p findings
for parser in idx cifar safetensors onnx npy image; do
    mkdir -p "work/$parser"
    echo "== $parser" >&2
    ./.build/debug/advkit-fuzz -max_total_time="$seconds" -timeout=5 -rss_limit_mb=4096 -max_len=65536 \
        -artifact_prefix=findings/ "work/$parser" "corpus/$parser" 2>&1 | grep -E "ERROR|SUMMARY|Done [0-9]+ runs" || true
done
found=$(ls findings | wc -l)
echo "findings: $found file(s) in Fuzz/findings/"
[ "$found" -eq 0 ]
