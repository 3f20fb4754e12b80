// advkit-bench: AdvKit's workloads on the reference CNN, timed the way ../shared/peers/bench_torch.py times
// PyTorch's (same images, same batch, same repetitions, same JSON terms), so the two run side by side:
//
//   swift run -c release advkit-bench --threads 2 --out bench-advkit.json
//   Benchmarks/compare.sh      # runs this and the PyTorch peer, prints the ratio table
@_spi(Support) import AdvKit
import Foundation

struct Options {
    var threads = 2
    var batch = 128
    var trainBatch = 64
    var reps = 5
    var n = 1024
    var nMinimal = 128
    var trainN = 4096
    var advtrainN = 1024
    var minRepSeconds = 0.5
    var weights: String?
    var dataDir = Dataset.defaultFashionMNISTDirectory
    var only: Set<String>?
    var out: String?
    var pgdStepsOnly: Int?
    var onnx = ONNXBenchOptions()

    static func parse(_ args: [String]) throws -> Options {
        var o = Options()
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw AdvKitError.invalidArgument("\(args[i - 1]) needs a value") }
            return args[i]
        }
        func int(_ s: String, _ name: String) throws -> Int {
            guard let v = Int(s), v > 0 else { throw AdvKitError.invalidArgument("\(name) must be a whole number > 0, got \(s)") }
            return v
        }
        while i < args.count {
            let a = args[i]
            switch a {
            case "--threads": o.threads = try int(try value(), a)
            case "--batch": o.batch = try int(try value(), a)
            case "--train-batch": o.trainBatch = try int(try value(), a)
            case "--reps": o.reps = try int(try value(), a)
            case "--n": o.n = try int(try value(), a)
            case "--n-minimal": o.nMinimal = try int(try value(), a)
            case "--train-n": o.trainN = try int(try value(), a)
            case "--advtrain-n": o.advtrainN = try int(try value(), a)
            case "--min-rep-s":
                guard let v = Double(try value()), v >= 0 else { throw AdvKitError.invalidArgument("--min-rep-s must be >= 0") }
                o.minRepSeconds = v
            case "--weights": o.weights = try value()
            case "--data-dir": o.dataDir = try value()
            case "--only": o.only = Set(try value().split(separator: ",").map(String.init))
            case "--out": o.out = try value()
            case "--pgd-steps-only":
                // Memory and allocation probes: one PGD run of --n images with this many steps, nothing else.
                o.pgdStepsOnly = try int(try value(), a)
            case "-h", "--help":
                print("""
                usage: advkit-bench [--threads 2] [--batch 128] [--reps 5] [--n 1024] [--n-minimal 128] [--train-n 4096]
                                    [--advtrain-n 1024] [--train-batch 64] [--min-rep-s 0.5] [--weights FILE] [--data-dir DIR]
                                    [--only forward,input_grad,...] [--out FILE]
                Workloads (keys as in bench_torch.py, suffix /advkit): forward, input_grad, fgsm, pgd40, pgd40_norandom,
                deepfool (first --n-minimal images), cw (first --n-minimal), train_std, train_pgd7.
                AutoAttack's, only when named in --only (minutes each): apgd-ce, apgd-dlr, apgd-t, autoattack, autoattack-10.
                \(ONNXBenchOptions.help)
                """)
                exit(0)
            default:
                guard try o.onnx.parse(a, value: value) else { throw AdvKitError.invalidArgument("unknown option \(a) (see --help)") }
            }
            i += 1
        }
        return o
    }
}

/// Per-image FLOP of the reference CNN (bench_torch.py's figures).
enum FLOP {
    static let forward = 7_739_904.0
    static let inputGrad = 15_479_808.0
    static let trainStep = 22_298_112.0
}

struct Runner {
    let options: Options

    func rusage() -> rusage {
        var r = Glibc.rusage()
        getrusage(RUSAGE_SELF.rawValue, &r)
        return r
    }

    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }

    /// Times `runAll` (all images, one pass) after `warmup` (one batch), like bench_torch.py's `timed`.
    func timed(_ name: String, images: Int, flopPerImage: Double?, warmup: () -> Void, runAll: () -> Tensor?) -> [String: Any] {
        warmup()
        var passes = 1
        if options.minRepSeconds > 0 {
            let t0 = Date()
            _ = runAll()
            let t1 = Date().timeIntervalSince(t0)
            if t1 < options.minRepSeconds { passes = max(1, Int((options.minRepSeconds / max(t1, 1e-6)).rounded(.up))) }
        }
        var times: [Double] = [], faults: [Double] = [], user: [Double] = [], sys: [Double] = []
        var first: Tensor?
        var same = true
        for _ in 0..<options.reps {
            let r0 = rusage()
            let t0 = DispatchTime.now().uptimeNanoseconds
            var out: Tensor?
            for _ in 0..<passes { out = runAll() }
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            let r1 = rusage()
            faults.append(Double(r1.ru_minflt - r0.ru_minflt))
            user.append(seconds(r1.ru_utime) - seconds(r0.ru_utime))
            sys.append(seconds(r1.ru_stime) - seconds(r0.ru_stime))
            if let out {
                if let first { same = same && first == out } else { first = out }
            }
        }
        let med = median(times)
        let imgs = Double(images * passes)
        var rec: [String: Any] = [
            "images": images, "passes_per_rep": passes, "reps": options.reps,
            "times_s": times.map { round4($0) }, "median_s": round4(med),
            "images_per_s": (imgs / med * 100).rounded() / 100,
            "cpu_user_s_median": round4(median(user)), "cpu_sys_s_median": round4(median(sys)),
            "minor_page_faults_median": Int(median(faults)),
        ]
        if let flopPerImage { rec["effective_gflops"] = (imgs * flopPerImage / med / 1e9 * 100).rounded() / 100 }
        if first != nil { rec["deterministic_across_reps"] = same }
        FileHandle.standardError.write(Data(String(format: "[%@] %.1f img/s  (median %.3fs of %d x %d pass(es), %d images, %d page faults/rep)\n",
                                                   name, imgs / med, med, options.reps, passes, images, Int(median(faults))).utf8))
        return rec
    }

    func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    func round4(_ x: Double) -> Double { (x * 10_000).rounded() / 10_000 }
}

@main
struct Bench {
    static func main() {
        do {
            try run(try Options.parse(Array(CommandLine.arguments.dropFirst())))
        } catch {
            FileHandle.standardError.write(Data("advkit-bench: \(error)\n".utf8))
            exit(1)
        }
    }

    static func run(_ o: Options) throws {
        Parallelism.threads = o.threads
        let started = Date()
        let model = Model(.cnn)
        let weights = o.weights ?? defaultWeights()
        if let weights { try model.load(from: weights) }
        let test = try Dataset.mnistFormat(directory: o.dataDir, split: .test).prefix(o.n)
        let x = test.images, y = test.labels
        if let steps = o.pgdStepsOnly {
            let adv = try PGD(epsilon: 0.1, alpha: 0.01, steps: steps).generate(model, images: x, labels: y, batchSize: o.batch)
            print("pgd \(steps) steps on \(test.count) images: mean \(adv.mean())")
            return
        }
        let r = Runner(options: o)
        var workloads: [String: Any] = [:]
        func want(_ key: String) -> Bool { o.only.map { $0.contains(key) || $0.contains(key + "/advkit") } ?? true }
        let batches = stride(from: 0, to: test.count, by: o.batch).map { $0..<min($0 + o.batch, test.count) }
        let xb = batches.map { x.batch($0) }, yb = batches.map { Array(y[$0]) }
        let tape = Tape()

        if want("forward") {
            func pass(_ k: Range<Int>) -> Tensor? {
                var last: Tensor?
                for i in k { tape.reset(); last = model(tape.input(xb[i])).value }
                return last
            }
            var rec = r.timed("forward/advkit", images: test.count, flopPerImage: FLOP.forward,
                              warmup: { _ = pass(0..<1) }, runAll: { pass(0..<xb.count) })
            rec["clean_accuracy"] = model.accuracy(x, labels: y)
            workloads["forward/advkit"] = rec
        }
        if want("input_grad") {
            func pass(_ k: Range<Int>) -> Tensor? {
                var last: Tensor?
                for i in k {
                    tape.reset()
                    let v = tape.input(xb[i])
                    let loss = tape.crossEntropy(model(v), labels: yb[i]).mean()
                    last = tape.gradient(of: loss, wrt: v)
                }
                return last
            }
            workloads["input_grad/advkit"] = r.timed("input_grad/advkit", images: test.count, flopPerImage: FLOP.inputGrad,
                                                     warmup: { _ = pass(0..<1) }, runAll: { pass(0..<xb.count) })
        }
        // Attacks: the images and settings of bench_torch.py (eps 0.1; PGD alpha 0.01, 40 steps; DeepFool 50 steps,
        // overshoot 0.02; C&W 100 steps, one binary-search step, c = 1), with its correctness figures.
        // Timed: the attack's images (`generate`), as bench_torch.py times the libraries' attack calls; the
        // figures below come from one untimed `run`.
        func attackRecord(_ key: String, _ attack: Attack, images: Tensor, labels: [Int32], flop: Double?) throws {
            var rec = r.timed(key, images: labels.count, flopPerImage: flop, warmup: {
                _ = try? attack.generate(model, images: images.batch(0..<min(o.batch, labels.count)),
                                         labels: Array(labels.prefix(o.batch)), seed: 0, batchSize: o.batch)
            }, runAll: {
                try? attack.generate(model, images: images, labels: labels, seed: 0, batchSize: o.batch)
            })
            let res = try attack.run(model, images: images, labels: labels, seed: 0, batchSize: o.batch)
            rec["robust_accuracy"] = res.robustAccuracy
            rec["clean_accuracy_same_images"] = res.cleanAccuracy
            rec["attack_success_rate_on_correct"] = res.successRate
            rec["linf_max"] = Double(res.outcomes.map(\.linf).max() ?? 0)
            rec["l2_mean"] = res.outcomes.map { Double($0.l2) }.reduce(0, +) / Double(max(res.outcomes.count, 1))
            rec["l2_median_successful"] = res.medianL2 as Any
            rec["in_bounds_0_1"] = res.adversarial.min() >= 0 && res.adversarial.max() <= 1
            rec["adv_pred"] = res.outcomes.map { String($0.adversarialPrediction) }.joined()
            workloads[key] = rec
        }
        let small = test.prefix(o.nMinimal)
        if want("fgsm") { try attackRecord("fgsm/advkit", FGSM(epsilon: 0.1), images: x, labels: y, flop: FLOP.inputGrad + FLOP.forward) }
        if want("pgd40") {
            try attackRecord("pgd40/advkit", PGD(epsilon: 0.1, alpha: 0.01, steps: 40, randomStart: true), images: x, labels: y,
                             flop: 40 * FLOP.inputGrad)
        }
        if want("pgd40_norandom") {
            try attackRecord("pgd40_norandom/advkit", PGD(epsilon: 0.1, alpha: 0.01, steps: 40, randomStart: false), images: x,
                             labels: y, flop: 40 * FLOP.inputGrad)
        }
        if want("deepfool") {
            try attackRecord("deepfool/advkit", DeepFool(steps: 50, overshoot: 0.02), images: small.images, labels: small.labels, flop: nil)
        }
        if want("cw") {
            try attackRecord("cw/advkit", CarliniWagnerL2(initialConstant: 1, binarySearchSteps: 1, steps: 100), images: small.images,
                             labels: small.labels, flop: nil)
        }
        // FAB-T as AutoAttack runs it (L-inf eps 0.1, 100 steps, 9 targets) on all --n images, beside torchattacks' FAB
        // in scripts/crosscheck/fab.py. Minutes: only when named in --only (fab).
        if o.only?.contains(where: { $0 == "fab" || $0 == "fab/advkit" }) ?? false {
            try attackRecord("fab/advkit", FAB(epsilon: 0.1, targeted: true), images: x, labels: y, flop: nil)
        }
        // Square (Andriushchenko et al. 2020): L-inf eps 0.1, 5,000 queries, seed 0, beside torchattacks' Square in
        // scripts/crosscheck/square.py. Minutes: only when named in --only. Timed once, every image in one batch
        // (its draws are keyed by image, so the batch size changes the speed, not the images).
        if o.only?.contains(where: { $0 == "square" || $0 == "square/advkit" }) == true {
            let square = SquareAttack(epsilon: 0.1, norm: .linf, queries: 5000)
            let t0 = Date()
            let q = try square.runCountingQueries(model, images: x, labels: y, seed: 0, batchSize: max(y.count, 1))
            let res = q.result
            workloads["square/advkit"] = [
                "images": y.count, "seconds": r.round4(Date().timeIntervalSince(t0)),
                "settings": Dictionary(uniqueKeysWithValues: square.settings.map { ($0.key, $0.value.jsonObject) }),
                "robust_accuracy": res.robustAccuracy, "clean_accuracy_same_images": res.cleanAccuracy,
                "attack_success_rate_on_correct": res.successRate,
                "queries_per_image_mean": Double(q.queries.reduce(0, +)) / Double(max(q.queries.count, 1)),
                "queries_max": q.queries.max() ?? 0, "queries_median_successful": q.medianQueriesOfSuccesses as Any,
                "linf_max": Double(res.outcomes.map(\.linf).max() ?? 0),
                "in_bounds_0_1": res.adversarial.min() >= 0 && res.adversarial.max() <= 1,
                "adv_pred": res.outcomes.map { String($0.adversarialPrediction) }.joined(),
            ] as [String: Any]
            FileHandle.standardError.write(Data(String(format: "[square/advkit] robust accuracy %.2f%%, %.1fs\n",
                                                       res.robustAccuracy * 100, Date().timeIntervalSince(t0)).utf8))
        }
        // AutoAttack's attacks (Croce & Hein 2020) at L-inf eps 0.1, the paper's 100 steps, as
        // scripts/crosscheck/autoattack.py runs them beside torchattacks. Minutes each: only when named in --only.
        func named(_ key: String) -> Bool { o.only.map { $0.contains(key) || $0.contains(key + "/advkit") } ?? false }
        if named("apgd-ce") { try attackRecord("apgd-ce/advkit", APGD(epsilon: 0.1, steps: 100), images: x, labels: y, flop: nil) }
        if named("apgd-dlr") {
            try attackRecord("apgd-dlr/advkit", APGD(epsilon: 0.1, steps: 100, loss: .dlr), images: x, labels: y, flop: nil)
        }
        if named("apgd-t") { try attackRecord("apgd-t/advkit", APGD.targeted(epsilon: 0.1, steps: 100), images: x, labels: y, flop: nil) }
        // "autoattack": the paper's 100 steps (AdvKit's default); "autoattack-10": the 10 steps torchattacks'
        // AutoAttack gives APGD, APGD-T and FAB by default (Square keeps 5,000 queries), like for like with it.
        for (key, steps) in [("autoattack", 100), ("autoattack-10", 10)] where named(key) {
            // Timed: the whole `runWithReport` (attack, per-component record, outcomes), whose figures are recorded.
            let aa = AutoAttack.standard(epsilon: 0.1, steps: steps)
            var report: AutoAttack.Report?
            var rec = r.timed("\(key)/advkit", images: y.count, flopPerImage: nil, warmup: {
                _ = try? aa.generate(model, images: x.batch(0..<min(o.batch, y.count)), labels: Array(y.prefix(o.batch)),
                                     seed: 0, batchSize: o.batch)
            }, runAll: {
                report = try? aa.runWithReport(model, images: x, labels: y, seed: 0, batchSize: o.batch)
                return report?.result.adversarial
            })
            guard let report else { throw AdvKitError.invalidArgument("autoattack failed") }
            let res = report.result
            rec["robust_accuracy"] = res.robustAccuracy
            rec["clean_accuracy_same_images"] = res.cleanAccuracy
            rec["attack_success_rate_on_correct"] = res.successRate
            rec["linf_max"] = Double(res.outcomes.map(\.linf).max() ?? 0)
            rec["in_bounds_0_1"] = res.adversarial.min() >= 0 && res.adversarial.max() <= 1
            rec["adv_pred"] = res.outcomes.map { String($0.adversarialPrediction) }.joined()
            rec["components"] = report.componentNames
            rec["robust_accuracy_after"] = report.componentNames.indices.map { report.robustAccuracy(afterComponents: $0 + 1) }
            rec["broken_by"] = report.brokenCounts
            rec["component_seconds"] = report.componentSeconds.map { r.round4($0) }
            rec["steps"] = steps
            workloads["\(key)/advkit"] = rec
        }
        // Imported ONNX models (ONNXBench.swift).
        try ONNXBench.run(o, r, model: model, test: test, workloads: &workloads)
        // Training as bench_torch.py times it: from the trained weights each pass, Adam 1e-3, batches of
        // --train-batch; `adversarial` (PGD-7, eps 0.1, alpha 0.025, random start) replaces each batch first.
        func trainRecord(_ key: String, images n: Int, adversarial: Bool) throws {
            let train = try Dataset.mnistFormat(directory: o.dataDir, split: .train).prefix(n)
            let initial = model.stateDict.map { $0.tensor.value }
            let tb = o.trainBatch
            let tbatches = stride(from: 0, to: train.count, by: tb).map { $0..<min($0 + tb, train.count) }
            let txb = tbatches.map { train.images.batch($0) }, tyb = tbatches.map { Array(train.labels[$0]) }
            let m = Model(.cnn)
            let trainTape = Tape(mode: .training)
            let pgd = PGD(epsilon: 0.1, alpha: 0.025, steps: 7, randomStart: true)
            func pass(_ k: Range<Int>) -> Tensor? {
                for (p, v) in zip(m.stateDict, initial) { p.tensor.value = v }
                let opt = Adam(learningRate: 1e-3)
                let params = m.parameters
                for i in k {
                    let x = adversarial ? ((try? pgd.generate(m, images: txb[i], labels: tyb[i], seed: UInt64(i), batchSize: tb)) ?? txb[i]) : txb[i]
                    trainTape.reset()
                    let loss = trainTape.crossEntropy(m(trainTape.input(x)), labels: tyb[i]).mean()
                    opt.step(params, gradients: trainTape.gradients(of: loss, wrt: params))
                }
                return nil
            }
            var rec = r.timed(key, images: train.count, flopPerImage: FLOP.trainStep + (adversarial ? 7 * FLOP.inputGrad : 0),
                              warmup: { _ = pass(0..<1) }, runAll: { pass(0..<txb.count) })
            var params: [String: Any] = ["optimizer": "Adam", "lr": 1e-3, "batch": tb]
            if adversarial { params["attack"] = "PGD Linf eps=0.1 alpha=0.025 steps=7 random start" }
            rec["params"] = params
            workloads[key] = rec
        }
        if want("train_std") { try trainRecord("train_std/advkit", images: o.trainN, adversarial: false) }
        if want("train_pgd7") { try trainRecord("train_pgd7/advkit", images: o.advtrainN, adversarial: true) }

        let env = ProcessInfo.processInfo.environment
        let result: [String: Any] = [
            "mode": "bench", "tool": "advkit-bench", "threads": o.threads, "batch": o.batch, "reps": o.reps,
            "blas_corename": Parallelism.blasCoreName,
            "env": ["OPENBLAS_CORETYPE": env["OPENBLAS_CORETYPE"] ?? "(unset)", "OMP_NUM_THREADS": env["OMP_NUM_THREADS"] ?? "(unset)"],
            "weights": weights ?? "(seed-0 initialisation)",
            "data": ["dir": o.dataDir, "n": test.count],
            "model_flop_per_image": ["forward": FLOP.forward, "input_grad": FLOP.inputGrad, "train_step": FLOP.trainStep],
            "workloads": workloads,
            "wall_seconds": (Date().timeIntervalSince(started) * 10).rounded() / 10,
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
        if let out = o.out { try FileIO.writeAtomically(json, to: out) }
        print(String(decoding: json, as: UTF8.self))
    }

    /// ../shared/peers/models/fmnist_cnn.safetensors beside the repository, if it is there.
    static func defaultWeights() -> String? {
        let candidates = ["../shared/peers/models/fmnist_cnn.safetensors", "../../shared/peers/models/fmnist_cnn.safetensors"]
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }
}
