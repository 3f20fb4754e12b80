#!/usr/bin/env bash
# The test suite: installs the Debian packages, runs every test, then checks that another package can depend
# on AdvKit by version (SwiftPM refuses unsafeFlags in such a dependency).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
swift test --skip-build
bash scripts/check-consumer.sh
