// swift-tools-version:5.10
//
// AdvKit: adversarial robustness of image classifiers, in Swift with a C core.
//
// No unsafe compiler or linker flags anywhere: SwiftPM refuses a package with unsafe flags when another package depends on
// it by version, and AdvKit must stay usable as a library. Consequences, measured and documented in
// Sources/CKernels/parallel.c and docs/ARCHITECTURE.md:
//  - OpenMP without `-fopenmp`: the kernels call the runtime's GNU entry point `GOMP_parallel` directly,
//    linking Debian's LLVM OpenMP runtime as `omp5`.
//  - Vector code without `-march`: hot loops carry `__attribute__((target_clones(...)))`.
import PackageDescription

let package = Package(
    name: "AdvKit",
    products: [
        .library(name: "AdvKit", targets: ["AdvKit"]),
        .executable(name: "advkit", targets: ["advkit"]),
        // advkit-bench is no product: dependents do not see it. In this package it is still an executable
        // (`swift build --product advkit-bench`, `swift run advkit-bench`), as SwiftPM gives the root package's
        // executable targets implicit products.
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // The DocC catalog (Sources/AdvKit/AdvKit.docc) is built by `swift package generate-documentation`; a plugin
        // only, linked into nothing.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // The performance-critical core: C99, no allocation, no I/O. Debian: libopenblas-dev, libomp-dev.
        .target(
            name: "CKernels",
            linkerSettings: [.linkedLibrary("openblas"), .linkedLibrary("omp5"), .linkedLibrary("m")]
        ),
        // zlib (Debian: zlib1g-dev), for gzip-compressed IDX files.
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // libpng and libjpeg-turbo (Debian: libpng-dev, libjpeg62-turbo-dev), for image folders.
        .systemLibrary(name: "CPNG", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", providers: [.apt(["libjpeg62-turbo-dev"])]),
        // A small C shim over them: their errors (longjmp from a callback) become return codes, never an abort. A
        // system library's `link` reaches Swift importers only, so the C target names the libraries itself.
        .target(name: "CImageIO", dependencies: ["CPNG", "CJPEG"],
                linkerSettings: [.linkedLibrary("png"), .linkedLibrary("jpeg")]),
        .target(name: "AdvKit", dependencies: ["CKernels", "CZlib", "CImageIO"]),
        .executableTarget(
            name: "advkit",
            dependencies: ["AdvKit", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "advkit-bench", dependencies: ["AdvKit"], path: "Benchmarks/advkit-bench"),
        .target(name: "AdvKitTestSupport", dependencies: ["AdvKit"], path: "Tests/AdvKitTestSupport"),
        .testTarget(name: "CKernelsTests", dependencies: ["CKernels", "AdvKitTestSupport"]),
        .testTarget(name: "AdvKitTests", dependencies: ["AdvKit", "AdvKitTestSupport"]),
        .testTarget(name: "advkitTests", dependencies: ["AdvKit", "AdvKitTestSupport"]),
    ]
)
