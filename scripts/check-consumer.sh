#!/usr/bin/env bash
# Builds a tiny package that depends on AdvKit through a git tag, as a user's package would: a clone of this
# repository's HEAD, tagged, reached by a file:// URL. Fails if AdvKit cannot be used as a versioned dependency
# (for example because a target uses unsafeFlags).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/AdvKit"
git -C "$work/AdvKit" -c user.name=ci -c user.email=ci@localhost tag -a 0.1.0 -m "consumer check" HEAD
mkdir -p "$work/consumer/Sources/consumer"
cat > "$work/consumer/Package.swift" <<SWIFT
// swift-tools-version:5.10
import PackageDescription
let package = Package(
    name: "consumer",
    dependencies: [.package(url: "file://$work/AdvKit", from: "0.1.0")],
    targets: [.executableTarget(name: "consumer", dependencies: [.product(name: "AdvKit", package: "AdvKit")])]
)
SWIFT
cat > "$work/consumer/Sources/consumer/main.swift" <<'SWIFT'
import AdvKit
let model = Model(.cnn, seed: 0)
let tape = Tape()
let x = tape.input(Tensor(zeros: [2, 1, 28, 28]))
let loss = tape.crossEntropy(model(x), labels: [0, 1]).mean()
let g = tape.gradient(of: loss, wrt: x)
precondition(g.shape == [2, 1, 28, 28] && g.isFinite)
print("consumer: built against AdvKit 0.1.0 by version; input gradient \(g.shape), max |g| \(g.maxAbs())")
SWIFT
(cd "$work/consumer" && swift build -q 2>&1 | tail -20 && ./.build/debug/consumer)
