import AdvKit
import Foundation
import XCTest

/// Fails unless every |got - want| <= atol + rtol * |want|; reports the worst element.
public func assertClose(_ got: [Float], _ want: [Double], atol: Double, rtol: Double, _ message: String = "",
                        file: StaticString = #filePath, line: UInt = #line) {
    guard got.count == want.count else {
        XCTFail("\(message): \(got.count) values, want \(want.count)", file: file, line: line)
        return
    }
    var worst = -1, worstExcess = 0.0
    for i in 0..<got.count {
        let err = abs(Double(got[i]) - want[i]), allowed = atol + rtol * abs(want[i])
        if !(err <= allowed), err - allowed > worstExcess || worst < 0 {
            worst = i
            worstExcess = err - allowed
        }
    }
    if worst >= 0 {
        XCTFail("\(message): element \(worst) is \(got[worst]), want \(want[worst]) (atol \(atol), rtol \(rtol))", file: file, line: line)
    }
}

public func assertClose(_ got: [Float], _ want: [Float], atol: Double, rtol: Double, _ message: String = "",
                        file: StaticString = #filePath, line: UInt = #line) {
    assertClose(got, want.map(Double.init), atol: atol, rtol: rtol, message, file: file, line: line)
}

/// Deterministic test data: uniform in [lo, hi) from a seed.
public func randomArray(_ n: Int, seed: UInt64, lo: Float = -1, hi: Float = 1) -> [Float] {
    var rng = SeededGenerator(seed: seed, stream: 77)
    return (0..<n).map { _ in lo + (hi - lo) * rng.nextUniform() }
}

public func randomTensor(_ shape: Shape, seed: UInt64, lo: Float = -1, hi: Float = 1) -> Tensor {
    Tensor(randomArray(shape.count, seed: seed, lo: lo, hi: hi), shape: shape)
}

/// A fresh temporary folder for one test.
public func temporaryDirectory(_ name: String = #function) -> String {
    let safe = name.filter { $0.isLetter || $0.isNumber }
    let dir = NSTemporaryDirectory() + "advkit-tests-\(safe)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Paths of the repository and of ../shared beside it (the PyTorch peer's weights and results).
public enum RepositoryPaths {
    public static var root: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }
    public static var shared: String { URL(fileURLWithPath: root).deletingLastPathComponent().path + "/shared" }
    public static var peerModel: String { shared + "/peers/models/fmnist_cnn.safetensors" }
    public static var peerResults: String { shared + "/peers/results/bench_t2.json" }
}

/// Fashion-MNIST's test split from Debian's package, or a skip that says how to get it.
public func fashionMNISTTest() throws -> Dataset {
    let dir = Dataset.defaultFashionMNISTDirectory
    guard FileManager.default.fileExists(atPath: dir + "/t10k-images-idx3-ubyte.gz") else {
        throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    }
    return try Dataset.mnistFormat(directory: dir, split: .test)
}

public func median(_ xs: [Double]) -> Double? {
    guard !xs.isEmpty else { return nil }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
