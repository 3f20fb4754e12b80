#!/usr/bin/env bash
# The test suite: installs the Debian packages, checks that another package can depend on AdvKit by version
# (SwiftPM refuses unsafeFlags in such a dependency), then builds in release and runs every test (the attack
# and training tests run real models; debug builds of the C kernels are ~10x slower).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check-consumer.sh
# Address sanitizer (debug build, its own folder) over the kernels, the parsers, the tape, training and the
# defenses: out-of-bounds reads and use-after-free fail here. Leak detection is off: LeakSanitizer reports
# XCTest's own objects (a weak reference made in XCTest's awaitUsingExpectation, and its test-run objects), and a
# suppression by stack frame would hide ours too.
swift build --build-tests --sanitize=address --scratch-path .build-asan
ASAN_OPTIONS=detect_leaks=0 swift test --skip-build --sanitize=address --scratch-path .build-asan --disable-swift-testing \
    --filter "CKernelsTests|IOTests|TensorTests|AutodiffTests|TrainingTests|InferenceDefenseTests"
# The DocC catalog (Sources/AdvKit/AdvKit.docc) with swift-docc-plugin and the toolchain's docc, warnings as errors:
# a broken symbol link in an article or a doc comment fails here. Same configuration and sanitizer as the build
# above, so AdvKit is not compiled again: only the plugin's tool, the symbol graph and docc run (~25 s on 2 cores).
swift package --disable-sandbox --sanitize=address --scratch-path .build-asan \
    generate-documentation --target AdvKit --warnings-as-errors
# Thread sanitizer over the threaded kernels and what drives them (2 threads): in this build the kernels' team is
# plain pthreads (Sources/CKernels/parallel.c says why), so a report is a real race. halt_on_error makes one fail the run.
swift build --build-tests --sanitize=thread --scratch-path .build-tsan
ADVKIT_THREADS=2 TSAN_OPTIONS=halt_on_error=1 swift test --skip-build --sanitize=thread --scratch-path .build-tsan \
    --disable-swift-testing --filter "CKernelsTests|TensorTests|AutodiffTests|TrainingTests|InferenceDefenseTests"
swift build -c release --build-tests
# Every test is XCTest; Swift Testing would only add a "0 tests" line after XCTest's summary.
swift test -c release --skip-build --disable-swift-testing
# report.html in a real browser (issue 16): headless Chromium (installed when missing) renders the report of a small
# evaluation of its own and checks the page, its script, plots, galleries and tables (~1 min on 2 cores).
bash scripts/check-report.sh
