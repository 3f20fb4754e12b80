@_spi(Testing) import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

/// The process-wide pool of released tape buffers (Tape.swift, BufferRecycler): a new tape (an attack's next batch)
/// draws the buffers an earlier tape released instead of allocating and faulting in fresh pages. Nothing it does
/// may change a result, and a buffer someone still holds must never be handed out (copy-on-write).
///
/// The pool normally keeps only buffers of 32 MiB and more (what glibc maps and unmaps on every allocation); these
/// tests lower that minimum to 0 so that the small models here run through it.
final class TapeReuseTests: XCTestCase {
    private var savedLimit = 0, savedMinimum = 0, savedThreads = 1

    override func setUp() {
        savedLimit = Tape.recycledBytesLimit
        savedMinimum = Tape.recycledMinimumBytes
        savedThreads = Parallelism.threads
        Tape.recycledMinimumBytes = 0  // also empties the pool
        Tape.recycledBytesLimit = 1 << 30
    }

    override func tearDown() {
        Tape.recycledBytesLimit = savedLimit
        Tape.recycledMinimumBytes = savedMinimum
        Parallelism.threads = savedThreads
    }

    /// A torchvision ResNet (3x3 convolutions, folded batch norm, fused residual joins) exported to ONNX.
    private func resnet() throws -> ONNXClassifier {
        try ONNXClassifier(contentsOf: RepositoryPaths.root + "/Tests/Fixtures/onnx/torchvision_resnet.onnx")
    }

    /// Same shape and the same bits in every element (Tensor's == calls -0 and +0 equal).
    private func same(_ a: Tensor, _ b: Tensor) -> Bool {
        a.shape == b.shape && a.scalars.map(\.bitPattern) == b.scalars.map(\.bitPattern)
    }

    /// Images in [0, 1] and labels for `model`, from a seed.
    private func batch(_ model: Classifier, _ n: Int, seed: UInt64) -> (Tensor, [Int32]) {
        let x = randomTensor(Shape([n] + model.inputShape.dims), seed: seed, lo: 0, hi: 1)
        return (x, (0..<n).map { Int32(($0 * 7 + Int(seed)) % model.classCount) })
    }

    /// PGD's adversarial images with the pool off and on, at 1 and 2 threads, on the reference CNN trained in the
    /// tests and on the ResNet export: the same bits. Batches of 5, 5 and 2: the second batch draws the first's
    /// buffers; the last, smaller one finds no sizes of its own and frees pooled bytes as it allocates. A second
    /// pooled run starts from the buffers the first left.
    func testPGDSameBitsWithAndWithoutThePool() throws {
        let (cnn, test) = try trainedReferenceCNN()
        let net = try resnet()
        let d = test.prefix(12)
        let (rx, ry) = batch(net, 12, seed: 4)
        let pgd = PGD(epsilon: 8 / 255, alpha: 2 / 255, steps: 4, randomStart: true)
        for (name, model, images, labels) in [("cnn", cnn as Classifier, d.images, d.labels), ("resnet", net, rx, ry)] {
            for threads in [1, 2] {
                Parallelism.threads = threads
                Tape.recycledBytesLimit = 0
                let off = try pgd.generate(model, images: images, labels: labels, seed: 3, batchSize: 5)
                XCTAssertEqual(Tape.recyclerStatistics.bytes, 0, "limit 0: the pool keeps nothing")
                Tape.recycledBytesLimit = 1 << 30
                let hits = Tape.recyclerStatistics.hits
                let on = try pgd.generate(model, images: images, labels: labels, seed: 3, batchSize: 5)
                let again = try pgd.generate(model, images: images, labels: labels, seed: 3, batchSize: 5)
                XCTAssertGreaterThan(Tape.recyclerStatistics.hits, hits, "\(name): later batches drew released buffers")
                XCTAssertTrue(same(on, off), "\(name), \(threads) thread(s): the pool changed the adversarial images")
                XCTAssertTrue(same(again, off), "\(name), \(threads) thread(s): a second pooled run differs")
            }
        }
    }

    /// Input gradients of one batch taken by a new tape for each of several other batches in between: the tapes
    /// that draw from the pool give the bits a tape of its own gives.
    func testInputGradientsSameBitsOnRecycledBuffers() throws {
        let net = try resnet()
        func gradient(_ x: Tensor, _ y: [Int32]) -> (Tensor, Tensor, Int) {
            let tape = Tape(mode: .inference)
            let v = tape.input(x)
            let logits = net(v)
            let g = tape.gradient(of: tape.crossEntropy(logits, labels: y).mean(), wrt: v)
            return (g, logits.value, tape.recycledBuffers)
        }
        let (x, y) = batch(net, 4, seed: 11)
        Tape.recycledBytesLimit = 0
        let want = gradient(x, y)
        Tape.recycledBytesLimit = 1 << 30
        var drew = 0
        for seed in UInt64(20)..<UInt64(24) {
            let (ox, oy) = batch(net, 4, seed: seed)
            _ = gradient(ox, oy)  // leaves its buffers, full of another batch's numbers, in the pool
            let got = gradient(x, y)
            drew += got.2
            XCTAssertTrue(same(got.0, want.0), "input gradient after batch \(seed)")
            XCTAssertTrue(same(got.1, want.1), "logits after batch \(seed)")
        }
        XCTAssertGreaterThan(drew, 0, "the tapes drew recycled buffers")
    }

    /// Copy-on-write: a value or gradient the caller still holds when its tape goes away stays the caller's; the
    /// next tapes, which draw from the pool, never write into it.
    func testHeldTensorsAreNeverRecycled() throws {
        let net = try resnet()
        let (x, y) = batch(net, 3, seed: 1)
        var heldGradient: Tensor
        var heldLogits: Tensor
        do {
            let tape = Tape(mode: .inference)
            let v = tape.input(x)
            let logits = net(v)
            heldGradient = tape.gradient(of: tape.crossEntropy(logits, labels: y).mean(), wrt: v)
            heldLogits = logits.value
        }
        let gradientCopy = heldGradient.scalars, logitsCopy = heldLogits.scalars
        for seed in UInt64(2)..<UInt64(5) {
            let (ox, oy) = batch(net, 3, seed: seed)
            let tape = Tape(mode: .inference)
            let v = tape.input(ox)
            _ = tape.gradient(of: tape.crossEntropy(net(v), labels: oy).mean(), wrt: v)
        }
        XCTAssertEqual(heldGradient.scalars, gradientCopy, "a held gradient was overwritten")
        XCTAssertEqual(heldLogits.scalars, logitsCopy, "held logits were overwritten")
        heldGradient = Tensor(zeros: [1])
        heldLogits = Tensor(zeros: [1])
    }

    /// The pool stays within its byte limit, empties at limit 0 and on `dropRecycledBuffers`, and a tape whose
    /// shapes differ from the pooled ones frees pooled bytes while it allocates (a smaller last batch does not
    /// hold the pool on top of its own buffers).
    func testLimitsAndShapeChanges() throws {
        let net = try resnet()
        func pass(_ n: Int) {
            let (x, y) = batch(net, n, seed: UInt64(n))
            let tape = Tape(mode: .inference)
            let v = tape.input(x)
            _ = tape.gradient(of: tape.crossEntropy(net(v), labels: y).mean(), wrt: v)
        }
        pass(8)
        let full = Tape.recyclerStatistics.bytes
        XCTAssertGreaterThan(full, 0, "a released tape's buffers are pooled")
        do {
            // Batch 3 needs none of batch 8's sizes.
            let (x, y) = batch(net, 3, seed: 3)
            let tape = Tape(mode: .inference)
            let v = tape.input(x)
            _ = tape.gradient(of: tape.crossEntropy(net(v), labels: y).mean(), wrt: v)
            XCTAssertLessThan(Tape.recyclerStatistics.bytes, full / 2, "a tape of other shapes freed the pool as it allocated")
        }
        pass(8)
        XCTAssertGreaterThan(Tape.recyclerStatistics.bytes, 0)
        Tape.recycledBytesLimit = 64 << 10
        XCTAssertLessThanOrEqual(Tape.recyclerStatistics.bytes, 64 << 10, "lowering the limit evicts")
        pass(8)
        XCTAssertLessThanOrEqual(Tape.recyclerStatistics.bytes, 64 << 10, "a release stays within the limit")
        Tape.recycledBytesLimit = 1 << 30
        pass(8)
        Tape.dropRecycledBuffers()
        XCTAssertEqual(Tape.recyclerStatistics.buffers, 0)
        XCTAssertEqual(Tape.recyclerStatistics.bytes, 0)
        pass(8)
        Tape.recycledBytesLimit = 0
        XCTAssertEqual(Tape.recyclerStatistics.bytes, 0, "limit 0 empties the pool")
    }

    /// Two idle seconds after the last release, the pool frees everything (an attack that is done does not keep
    /// its gigabyte).
    func testPoolEmptiesWhenIdle() throws {
        let net = try resnet()
        let (x, y) = batch(net, 4, seed: 9)
        do {
            let tape = Tape(mode: .inference)
            let v = tape.input(x)
            _ = tape.gradient(of: tape.crossEntropy(net(v), labels: y).mean(), wrt: v)
        }
        XCTAssertGreaterThan(Tape.recyclerStatistics.bytes, 0)
        let deadline = Date().addingTimeInterval(10)
        while Tape.recyclerStatistics.bytes > 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        XCTAssertEqual(Tape.recyclerStatistics.bytes, 0, "the pool was still full 10 s after the last release")
    }

    /// Tapes on several threads at once share the pool under its lock: every gradient has the bits of the same
    /// gradient taken alone with the pool off. One model per thread (a model's caches are not shared across
    /// threads), one kernel thread each.
    func testConcurrentTapesShareThePool() throws {
        Parallelism.threads = 1
        let models = try (0..<3).map { _ in try resnet() }
        let inputs = (0..<6).map { batch(models[0], 2 + $0 % 3, seed: UInt64(30 + $0)) }
        func gradient(_ m: ONNXClassifier, _ k: Int) -> Tensor {
            let tape = Tape(mode: .inference)
            let v = tape.input(inputs[k].0)
            return tape.gradient(of: tape.crossEntropy(m(v), labels: inputs[k].1).mean(), wrt: v)
        }
        Tape.recycledBytesLimit = 0
        let want = inputs.indices.map { gradient(models[0], $0) }
        Tape.recycledBytesLimit = 1 << 30
        let lock = NSLock()
        var got = [[Tensor]](repeating: [], count: models.count)
        DispatchQueue.concurrentPerform(iterations: models.count) { t in
            var mine: [Tensor] = []
            for round in 0..<3 { for k in inputs.indices { if round == 2 { mine.append(gradient(models[t], k)) } else { _ = gradient(models[t], k) } } }
            lock.lock(); got[t] = mine; lock.unlock()
        }
        for t in models.indices {
            for k in inputs.indices { XCTAssertTrue(same(got[t][k], want[k]), "thread \(t), batch \(k)") }
        }
    }
}
