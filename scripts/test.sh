#!/usr/bin/env bash
# The test suite: installs the Debian packages, checks that another package can depend on AdvKit by version
# (SwiftPM refuses unsafeFlags in such a dependency), then builds in release and runs every test (the attack
# and training tests run real models; debug builds of the C kernels are ~10x slower).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check-consumer.sh
swift build -c release --build-tests
# Every test is XCTest; Swift Testing would only add a "0 tests" line after XCTest's summary.
swift test -c release --skip-build --disable-swift-testing
