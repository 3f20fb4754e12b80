// advkit-bench's imported-ONNX workloads (issue #12): the reference CNN exported to ONNX against the built-in
// Model(.cnn) on the same weights and images, and full-size torchvision ResNet-18 (CIFAR stem) and MobileNetV2
// exports at 3x32x32. Benchmarks/onnx_compare.sh times PyTorch on the same exported models in the same run.
//
//   onnx-cnn-forward, onnx-cnn-grad, onnx-cnn-pgd40   Tests/Fixtures/onnx/cnn_dynamo.onnx (--onnx-cnn) on the first
//       --n Fashion-MNIST test images, as forward / input_grad / pgd40 (eps 0.1, alpha 0.01, random start, seed 0).
//       Each is timed in alternating repetitions with the built-in model's same workload (A/B on a noisy machine),
//       recorded as builtin_median_s and onnx_over_builtin_time.
//   onnx-resnet18-grad, onnx-resnet18-pgd10            --onnx-resnet18 FILE (default ../onnx-full/resnet18_cifar.onnx),
//       the first --onnx-resnet18-n (128) images;
//   onnx-mobilenetv2-grad, onnx-mobilenetv2-pgd10      --onnx-mobilenetv2 FILE (default
//       ../onnx-full/mobilenet_v2_cifar.onnx), the first --onnx-mobilenetv2-n (512) images.
//       Images: Fashion-MNIST test images padded to 32x32 with zeros (2 pixels a side) and repeated over 3 channels
//       (no CIFAR-10 on this machine; bench_onnx_torch.py makes the same ones); labels: Fashion-MNIST's.
//       PGD-10: L-inf eps 8/255, alpha 2/255, no random start (issue #18); input gradient: d mean CE / d x.
// The full-size files are not committed (scripts/onnx/make_fixtures.py --full makes them): a workload whose file
// is missing is skipped with a message. --onnx-adv-out DIR writes each PGD workload's adversarial images
// (DIR/NAME.advkit.safetensors) for the comparison with PyTorch's.
@_spi(Support) import AdvKit
import Foundation

struct ONNXBenchOptions {
    var cnn = "Tests/Fixtures/onnx/cnn_dynamo.onnx"
    var resnet18 = "../onnx-full/resnet18_cifar.onnx"
    var mobilenetV2 = "../onnx-full/mobilenet_v2_cifar.onnx"
    var resnet18N = 128
    var mobilenetV2N = 512
    /// Repetitions of the full-size workloads (one pass takes seconds to minutes); nil: --reps.
    var fullReps: Int?
    var advOut: String?

    static let workloads = ["onnx-cnn-forward", "onnx-cnn-grad", "onnx-cnn-pgd40", "onnx-resnet18-grad", "onnx-resnet18-pgd10",
                            "onnx-mobilenetv2-grad", "onnx-mobilenetv2-pgd10"]

    /// Consumes `args[i]` (and its value) if it is one of these options; false if it is not.
    mutating func parse(_ a: String, value: () throws -> String) throws -> Bool {
        func count(_ s: String) throws -> Int {
            guard let v = Int(s), v > 0 else { throw AdvKitError.invalidArgument("\(a) must be a whole number > 0, got \(s)") }
            return v
        }
        switch a {
        case "--onnx-cnn": cnn = try value()
        case "--onnx-resnet18": resnet18 = try value()
        case "--onnx-mobilenetv2": mobilenetV2 = try value()
        case "--onnx-resnet18-n": resnet18N = try count(try value())
        case "--onnx-mobilenetv2-n": mobilenetV2N = try count(try value())
        case "--onnx-adv-out": advOut = try value()
        case "--onnx-full-reps": fullReps = try count(try value())
        default: return false
        }
        return true
    }

    static let help = """
    ONNX workloads, run only when --only names them (or "onnx" for all): onnx-cnn-forward, onnx-cnn-grad, onnx-cnn-pgd40 (--onnx-cnn FILE, default
    Tests/Fixtures/onnx/cnn_dynamo.onnx; each A/B-timed against the built-in model), onnx-resnet18-grad,
    onnx-resnet18-pgd10 (--onnx-resnet18 FILE, --onnx-resnet18-n 128), onnx-mobilenetv2-grad, onnx-mobilenetv2-pgd10
    (--onnx-mobilenetv2 FILE, --onnx-mobilenetv2-n 512), --onnx-full-reps N (default --reps) for these four;
    --onnx-adv-out DIR saves the PGD workloads' images.
    """
}

extension Runner {
    /// Times `runA` and `runB` in alternating repetitions (A, B, A, B, ...), each after its warm-up: the record of
    /// A, with B's median as builtin_median_s and A's time over B's. One pass of each per repetition unless a pass of
    /// A is shorter than --min-rep-s (then both run as many passes).
    func timedAB(_ name: String, images: Int, flopPerImage: Double?, warmupA: () -> Void, runA: () -> Tensor?,
                 warmupB: () -> Void, runB: () -> Tensor?) -> [String: Any] {
        warmupA(); warmupB()
        var passes = 1
        if options.minRepSeconds > 0 {
            let t0 = Date()
            _ = runA()
            let t1 = Date().timeIntervalSince(t0)
            _ = runB()
            if t1 < options.minRepSeconds { passes = max(1, Int((options.minRepSeconds / max(t1, 1e-6)).rounded(.up))) }
        }
        /// Wall seconds, user CPU seconds (robust to other processes on the machine when one thread runs), output.
        func clock(_ run: () -> Tensor?) -> (Double, Double, Tensor?) {
            let u0 = seconds(rusage().ru_utime)
            let t0 = DispatchTime.now().uptimeNanoseconds
            var out: Tensor?
            for _ in 0..<passes { out = run() }
            return (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9, seconds(rusage().ru_utime) - u0, out)
        }
        var ta: [Double] = [], tb: [Double] = [], ua: [Double] = [], ub: [Double] = []
        var outA: Tensor?, outB: Tensor?
        for _ in 0..<options.reps {
            let (a, cpuA, oa) = clock(runA)
            let (b, cpuB, ob) = clock(runB)
            ta.append(a); tb.append(b); ua.append(cpuA); ub.append(cpuB)
            outA = oa; outB = ob
        }
        let ma = median(ta), mb = median(tb)
        let imgs = Double(images * passes)
        var rec: [String: Any] = [
            "images": images, "passes_per_rep": passes, "reps": options.reps,
            "times_s": ta.map { round4($0) }, "median_s": round4(ma), "seconds_per_pass": round4(ma / Double(passes)),
            "images_per_s": (imgs / ma * 100).rounded() / 100,
            "builtin_times_s": tb.map { round4($0) }, "builtin_median_s": round4(mb),
            "builtin_images_per_s": (imgs / mb * 100).rounded() / 100,
            "onnx_over_builtin_time": (ma / mb * 10_000).rounded() / 10_000,
            "cpu_user_s_median": round4(median(ua)), "builtin_cpu_user_s_median": round4(median(ub)),
            "onnx_over_builtin_cpu": (median(ua) / max(median(ub), 1e-9) * 10_000).rounded() / 10_000,
            "timing": "alternating repetitions with the built-in Model(.cnn)'s same workload",
        ]
        if let flopPerImage { rec["effective_gflops"] = (imgs * flopPerImage / ma / 1e9 * 100).rounded() / 100 }
        if let outA, let outB { rec["max_abs_diff_vs_builtin"] = Double(maxAbsDiff(outA, outB)) }
        FileHandle.standardError.write(Data(String(format: "[%@] %.1f img/s, built-in %.1f img/s: onnx/builtin time %.3f, CPU %.3f (medians of %d x %d pass(es))\n",
                                                   name, imgs / ma, imgs / mb, ma / mb, median(ua) / max(median(ub), 1e-9),
                                                   options.reps, passes).utf8))
        return rec
    }

    func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.shape == b.shape, "maxAbsDiff: \(a.shape) vs \(b.shape)")
        return (a - b).maxAbs()
    }
}

enum ONNXBench {
    /// Fashion-MNIST images (N,1,28,28) as 3x32x32 pictures: zero-padded by 2 on every side, the one channel
    /// repeated three times. bench_onnx_torch.py builds the same tensor.
    static func cifarSized(_ x: Tensor) -> Tensor {
        precondition(x.shape.rank == 4 && Array(x.shape.dims.dropFirst()) == [1, 28, 28], "cifarSized: \(x.shape)")
        let n = x.shape[0], src = x.scalars
        var out = [Float](repeating: 0, count: n * 3 * 32 * 32)
        for i in 0..<n {
            for c in 0..<3 {
                for y in 0..<28 {
                    for x in 0..<28 { out[((i * 3 + c) * 32 + y + 2) * 32 + x + 2] = src[(i * 28 + y) * 28 + x] }
                }
            }
        }
        return Tensor(out, shape: [n, 3, 32, 32])
    }

    /// Against the exporter's reference beside the model (make_fixtures.py's NAME.ref.safetensors: onnxruntime's
    /// logits, PyTorch's float64 gradient of Σ logits ⊙ upstream): the largest errors relative to the largest
    /// reference magnitude, so a timing is never of a model computing something else.
    static func refCheck(_ m: Classifier, _ path: String) throws -> [String: Double]? {
        let ref = (path.hasSuffix(".onnx") ? String(path.dropLast(5)) : path) + ".ref.safetensors"
        guard FileManager.default.fileExists(atPath: ref) else { return nil }
        let t = try Safetensors.read(ref).tensors
        guard let x = t["input"], let logits = t["logits"], let up = t["upstream"], let grad = t["grad_input"] else { return nil }
        let tape = Tape(), v = tape.input(x)
        let z = m(v)
        let g = tape.gradient(of: z, seed: up, wrt: v)
        func rel(_ a: Tensor, _ b: Tensor) -> Double { Double((a - b).maxAbs()) / Double(max(b.maxAbs(), 1e-30)) }
        let r = ["logits_rel_error": rel(z.value, logits), "input_gradient_rel_error": rel(g, grad)]
        FileHandle.standardError.write(Data("advkit-bench: \(ref): \(r)\n".utf8))
        return r
    }

    /// Accuracy of any classifier (Model has its own).
    static func accuracy(_ m: Classifier, _ x: Tensor, _ y: [Int32]) -> Double {
        let pred = m.logits(of: x).argmaxRows()
        return Double(zip(pred, y).filter { $0 == Int($1) }.count) / Double(max(y.count, 1))
    }

    /// Runs the workloads --only names (a key, key/advkit, or "onnx" for all of them); none without --only, so
    /// the default run and Benchmarks/compare.sh stay as they were.
    static func run(_ o: Options, _ r: Runner, model: Model, test: Dataset, workloads: inout [String: Any]) throws {
        let ob = o.onnx
        func want(_ key: String) -> Bool { o.only.map { $0.contains(key) || $0.contains(key + "/advkit") || $0.contains("onnx") } ?? false }
        guard ONNXBenchOptions.workloads.contains(where: want) else { return }
        let batches = stride(from: 0, to: test.count, by: o.batch).map { $0..<min($0 + o.batch, test.count) }
        let tape = Tape()

        func forwardPass(_ m: Classifier, _ xb: [Tensor]) -> Tensor? {
            var last: Tensor?
            for x in xb { tape.reset(); last = m(tape.input(x)).value }
            return last
        }
        func gradPass(_ m: Classifier, _ xb: [Tensor], _ yb: [[Int32]]) -> Tensor? {
            var last: Tensor?
            for (x, y) in zip(xb, yb) {
                tape.reset()
                let v = tape.input(x)
                last = tape.gradient(of: tape.crossEntropy(m(v), labels: y).mean(), wrt: v)
            }
            return last
        }
        func save(_ name: String, _ adv: Tensor, _ images: Tensor, _ labels: [Int32], _ model: String) throws {
            guard let dir = ob.advOut else { return }
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Safetensors.write([("adversarial", adv), ("images", images), ("labels", Tensor(labels.map(Float.init)))],
                                  metadata: ["workload": name, "model": model], to: "\(dir)/\(name).advkit.safetensors")
        }

        // The reference CNN: the imported graph against the built-in model, same weights, same images.
        if ["onnx-cnn-forward", "onnx-cnn-grad", "onnx-cnn-pgd40"].contains(where: want) {
            guard FileManager.default.fileExists(atPath: ob.cnn) else {
                FileHandle.standardError.write(Data("advkit-bench: \(ob.cnn) is missing: onnx-cnn-* skipped (run from the repository root, or --onnx-cnn FILE)\n".utf8))
                return
            }
            let onnx = try ONNXClassifier(contentsOf: ob.cnn)
            let x = test.images, y = test.labels
            let xb = batches.map { x.batch($0) }, yb = batches.map { Array(y[$0]) }
            let same = onnx.logits(of: xb[0]).scalars == model.logits(of: xb[0]).scalars
            func note(_ rec: inout [String: Any]) {
                rec["model"] = ob.cnn
                rec["logits_bitwise_equal_to_builtin_first_batch"] = same
            }
            if want("onnx-cnn-forward") {
                var rec = r.timedAB("onnx-cnn-forward/advkit", images: test.count, flopPerImage: FLOP.forward,
                                    warmupA: { _ = forwardPass(onnx, [xb[0]]) }, runA: { forwardPass(onnx, xb) },
                                    warmupB: { _ = forwardPass(model, [xb[0]]) }, runB: { forwardPass(model, xb) })
                note(&rec)
                rec["clean_accuracy"] = accuracy(onnx, x, y)
                workloads["onnx-cnn-forward/advkit"] = rec
            }
            if want("onnx-cnn-grad") {
                var rec = r.timedAB("onnx-cnn-grad/advkit", images: test.count, flopPerImage: FLOP.inputGrad,
                                    warmupA: { _ = gradPass(onnx, [xb[0]], [yb[0]]) }, runA: { gradPass(onnx, xb, yb) },
                                    warmupB: { _ = gradPass(model, [xb[0]], [yb[0]]) }, runB: { gradPass(model, xb, yb) })
                note(&rec)
                workloads["onnx-cnn-grad/advkit"] = rec
            }
            if want("onnx-cnn-pgd40") {
                let pgd = PGD(epsilon: 0.1, alpha: 0.01, steps: 40, randomStart: true)
                func attack(_ m: Classifier, _ k: Int?) -> Tensor? {
                    let n = k ?? test.count
                    return try? pgd.generate(m, images: n == test.count ? x : x.batch(0..<n), labels: Array(y.prefix(n)), seed: 0,
                                             batchSize: o.batch)
                }
                var rec = r.timedAB("onnx-cnn-pgd40/advkit", images: test.count, flopPerImage: 40 * FLOP.inputGrad,
                                    warmupA: { _ = attack(onnx, min(o.batch, test.count)) }, runA: { attack(onnx, nil) },
                                    warmupB: { _ = attack(model, min(o.batch, test.count)) }, runB: { attack(model, nil) })
                note(&rec)
                rec["params"] = "PGD Linf eps=0.1 alpha=0.01 steps=40 random start, seed 0 (as pgd40/advkit)"
                if let adv = attack(onnx, nil) {
                    rec["robust_accuracy"] = accuracy(onnx, adv, y)
                    try save("onnx-cnn-pgd40", adv, x, y, ob.cnn)
                }
                workloads["onnx-cnn-pgd40/advkit"] = rec
            }
        }

        // Full-size torchvision models at 3x32x32 (issue #18's configurations). One pass takes seconds: no
        // calibration pass, and the warm-up is one input gradient of 16 images (the tape's buffers then grow once,
        // in the first timed batch).
        var fo = o
        fo.minRepSeconds = 0
        fo.reps = ob.fullReps ?? o.reps
        let rf = Runner(options: fo)
        for (key, path, n) in [("resnet18", ob.resnet18, ob.resnet18N), ("mobilenetv2", ob.mobilenetV2, ob.mobilenetV2N)] {
            let gradKey = "onnx-\(key)-grad", pgdKey = "onnx-\(key)-pgd10"
            guard want(gradKey) || want(pgdKey) else { continue }
            guard FileManager.default.fileExists(atPath: path) else {
                FileHandle.standardError.write(Data("advkit-bench: \(path) is missing: \(gradKey), \(pgdKey) skipped (scripts/onnx/make_fixtures.py --full --out-full DIR makes it; --onnx-\(key) FILE)\n".utf8))
                continue
            }
            let m = try ONNXClassifier(contentsOf: path)
            guard m.inputShape == [3, 32, 32] else {
                throw AdvKitError.invalidArgument("\(path) takes images \(m.inputShape); the \(key) workloads use 3x32x32")
            }
            guard test.count >= n else { throw AdvKitError.invalidArgument("--onnx-\(key)-n \(n) is more than the --n \(test.count) images read") }
            let sub = test.prefix(n)
            let x = cifarSized(sub.images), y = sub.labels
            let bs = stride(from: 0, to: n, by: o.batch).map { $0..<min($0 + o.batch, n) }
            let xb = bs.map { x.batch($0) }, yb = bs.map { Array(y[$0]) }
            let warmX = x.batch(0..<min(16, n)), warmY = Array(y.prefix(16))
            var info: [String: Any] = ["model": path, "images_source": "Fashion-MNIST test, zero-padded to 32x32, 3 channels",
                                       "summary": m.summary]
            if let check = try refCheck(m, path) { info["reference_check"] = check }
            if want(gradKey) {
                var rec = rf.timed(gradKey + "/advkit", images: n, flopPerImage: nil,
                                   warmup: { _ = gradPass(m, [warmX], [warmY]) }, runAll: { gradPass(m, xb, yb) })
                rec.merge(info) { a, _ in a }
                workloads[gradKey + "/advkit"] = rec
            }
            if want(pgdKey) {
                let pgd = PGD(epsilon: 8 / 255, alpha: 2 / 255, steps: 10, randomStart: false)
                func attack(_ k: Int) -> Tensor? {
                    try? pgd.generate(m, images: k == n ? x : x.batch(0..<k), labels: Array(y.prefix(k)), batchSize: o.batch)
                }
                var last: Tensor?
                var rec = rf.timed(pgdKey + "/advkit", images: n, flopPerImage: nil,
                                   warmup: { _ = gradPass(m, [warmX], [warmY]) }, runAll: { last = attack(n); return last })
                rec.merge(info) { a, _ in a }
                rec["params"] = "PGD Linf eps=8/255 alpha=2/255 steps=10, no random start"
                if let adv = last {
                    rec["clean_accuracy"] = accuracy(m, x, y)
                    rec["robust_accuracy"] = accuracy(m, adv, y)
                    try save(pgdKey, adv, x, y, path)
                }
                workloads[pgdKey + "/advkit"] = rec
            }
        }
    }
}
