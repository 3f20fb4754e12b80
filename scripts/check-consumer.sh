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
# The Swift examples of the DocC articles (Sources/AdvKit/AdvKit.docc): every ```swift block that starts with
# `import AdvKit` is compiled here, against AdvKit as a dependency, so an example that no longer compiles fails CI.
# A block that declares a type goes in at file scope, any other becomes the body of a function; the functions of
# WritingANewAttack.md (an attack written outside AdvKit, checked by its properties on an untrained model) also run.
for article in "$work"/AdvKit/Sources/AdvKit/AdvKit.docc/*.md; do
    name=$(basename "$article" .md)
    awk -v name="$name" '
        /^```swift$/ { inblock = 1; n = 0; delete lines; next }
        inblock && /^```$/ {
            inblock = 0
            if (n == 0 || lines[1] != "import AdvKit") next
            count++
            decl = 0
            for (i = 2; i <= n; i++) if (lines[i] ~ /^(struct|final class|class|enum|extension|protocol) /) decl = 1
            if (!decl) print "func docExample_" name "_" count "() throws {"
            for (i = 2; i <= n; i++) print lines[i]
            if (!decl) print "}"
            next
        }
        inblock { lines[++n] = $0 }
        BEGIN { print "import AdvKit"; print "import Foundation" }
    ' "$article" > "$work/consumer/Sources/consumer/Doc$name.swift"
done
grep -ho '^func docExample_WritingANewAttack_[0-9]*' "$work/consumer/Sources/consumer/DocWritingANewAttack.swift" \
    | sed 's/^func \(.*\)/try \1()/' >> "$work/consumer/Sources/consumer/main.swift"
echo 'print("consumer: the worked example of WritingANewAttack.md ran")' >> "$work/consumer/Sources/consumer/main.swift"
echo "consumer: $(cat "$work"/consumer/Sources/consumer/Doc*.swift | grep -c '^func docExample_') article examples to compile as functions"
(cd "$work/consumer" && swift build -q 2>&1 | tail -20 && ./.build/debug/consumer)
# advkit-bench is no product of AdvKit, so a dependent cannot build it (and does not build it with AdvKit).
if (cd "$work/consumer" && swift build --product advkit-bench >/dev/null 2>&1); then
    echo "consumer: advkit-bench is visible to a package that depends on AdvKit" >&2
    exit 1
fi
echo "consumer: advkit-bench is not a product dependents see"
