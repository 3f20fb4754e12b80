// swift-tools-version:5.10
// libFuzzer targets for AdvKit's parsers (IDX, CIFAR-10, safetensors, ONNX, NumPy .npy/.npz, PNG/JPEG). A package of
// its own: a fuzz target has no main (libFuzzer brings it), so it cannot sit among the main package's products.
// See Fuzz/run.sh.
import PackageDescription

let package = Package(
    name: "AdvKitFuzz",
    dependencies: [.package(name: "AdvKit", path: "..")],
    targets: [.executableTarget(name: "advkit-fuzz", dependencies: [.product(name: "AdvKit", package: "AdvKit")])]
)
