import AdvKit
import ArgumentParser
import Foundation

/// The attacks of `advkit attack`, each with the options it takes and the norms it runs in: one definition,
/// used to build the attack, to refuse options that do not apply, and to write the help.
enum AttackName: String, ExpressibleByArgument, CaseIterable {
    case fgsm, fgsmLL = "fgsm-ll", bim, mifgsm, rfgsm, pgd, apgd, apgdDLR = "apgd-dlr", apgdT = "apgd-t", jsma, deepfool, cw
    case fab, fabT = "fab-t", square, hsja, autoattack

    /// The options this attack reads (besides the general ones: data, model, goal, seed, batch size, outputs).
    var options: Set<AttackOption> {
        switch self {
        case .fgsm, .fgsmLL: return [.eps, .norm]
        case .bim: return [.eps, .norm, .steps, .alpha]
        case .mifgsm: return [.eps, .norm, .steps, .alpha]
        case .rfgsm: return [.eps, .norm, .alpha]
        case .pgd: return [.eps, .norm, .steps, .alpha, .restarts, .noRandomStart]
        case .apgd, .apgdDLR: return [.eps, .norm, .steps, .restarts]
        case .apgdT: return [.eps, .norm, .steps, .restarts, .targetClasses]
        case .fab: return [.eps, .norm, .steps, .restarts]
        case .fabT: return [.eps, .norm, .steps, .restarts, .targetClasses]
        case .square: return [.eps, .norm, .queries, .restarts]
        case .hsja: return [.norm, .queries]
        case .autoattack: return [.eps, .norm, .ensemble]
        case .jsma: return [.theta, .gamma]
        case .deepfool: return [.norm, .steps, .overshoot]
        case .cw: return [.norm, .steps, .kappa, .cwConstant, .searchSteps, .cwLr]
        }
    }

    /// The norms it runs in; the first is the default.
    var norms: [Norm] {
        switch self {
        case .fgsm, .fgsmLL, .bim, .pgd, .apgd, .apgdDLR, .apgdT, .fab, .fabT, .square, .autoattack: return [.linf, .l2]
        case .deepfool, .hsja: return [.l2, .linf]
        case .mifgsm, .rfgsm: return [.linf]
        case .jsma: return []  // an L0 attack: no ball
        case .cw: return [.l2]
        }
    }
}

/// An attack-specific option of `advkit attack`, by its flag.
enum AttackOption: String, CaseIterable {
    case eps, norm, steps, alpha, restarts, overshoot, theta, gamma, kappa, cwConstant = "cw-constant"
    case searchSteps = "search-steps", cwLr = "cw-lr", noRandomStart = "no-random-start"
    case queries, ensemble, targetClasses = "target-classes"

    var flag: String { "--" + rawValue }

    /// The attacks that take this option.
    var takenBy: [AttackName] { AttackName.allCases.filter { $0.options.contains(self) } }
}

extension Norm: ExpressibleByArgument {}

/// The AutoAttack ensembles `--ensemble` names.
enum AutoAttackEnsemble: String, ExpressibleByArgument, CaseIterable { case standard, rand }

struct AttackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attack",
        abstract: "Attack a model: write adversarial images (float32 IDX) and print clean and robust accuracy.",
        discussion: """
        An option that the chosen attack does not take is an error. Epsilons and step sizes are in [0,1] pixel units \
        and may be written as fractions: --eps 8/255. --json records every effective setting (defaults included), \
        the model file's SHA-256 and AdvKit's version.
        """)

    @OptionGroup var data: DataOptions
    @OptionGroup var network: ModelOptions
    @OptionGroup var threads: ThreadOptions
    @OptionGroup var defenses: DefenseOptions

    @Option(name: .customLong("model"), help: "The model: .onnx (any exported classifier), or .safetensors with --arch.") var modelPath: String
    @Option(help: "The attack: \(AttackName.allCases.map(\.rawValue).joined(separator: ", ")).") var attack: AttackName
    @Option(help: "Radius of the threat model's ball, e.g. 0.1 or 8/255 (fgsm, fgsm-ll, bim, mifgsm, rfgsm, pgd, apgd, apgd-dlr, apgd-t, square, autoattack: default 0.1; fab, fab-t: optional, a perturbation larger than eps counts as a failure; without it FAB reports the minimal norm).", transform: PixelAmount.argument)
    var eps: PixelAmount?
    @Option(help: "Norm: linf or l2 (fgsm, fgsm-ll, bim, pgd, apgd: default linf; deepfool: default l2, or linf; cw: l2 only; mifgsm, rfgsm: linf only).")
    var norm: Norm?
    @Option(help: "Iterations (bim: Kurakin's rule min(eps*255+4, 1.25*eps*255), 30 at eps 0.1, or 10 for l2; mifgsm 10; pgd 40; apgd, apgd-dlr, apgd-t, fab, fab-t 100; deepfool 50; cw 100 per search step).")
    var steps: Int?
    @Option(help: "Step size, e.g. 0.01 or 2/255 (bim: eps/10, l2 eps/4; mifgsm: eps/steps; rfgsm: eps/2; pgd: 2.5*eps/steps).", transform: PixelAmount.argument)
    var alpha: PixelAmount?
    @Option(help: "Random restarts, keeping each image's worst case (pgd, apgd, apgd-dlr, apgd-t, fab, fab-t, square). (default: 1)") var restarts: Int?
    @Option(help: "Overshoot of the total perturbation (deepfool). (default: 0.02)") var overshoot: Float?
    @Option(help: "Change per pixel, theta (jsma). (default: 1)") var theta: Float?
    @Option(help: "Largest fraction of pixels changed, gamma (jsma). (default: 0.1)") var gamma: Float?
    @Option(help: "Confidence margin kappa (cw). (default: 0)") var kappa: Float?
    @Option(help: "Initial constant c (cw). (default: 1)") var cwConstant: Float?
    @Option(help: "Binary search steps over c (cw). (default: 5)") var searchSteps: Int?
    @Option(help: "Learning rate of Adam (cw). (default: 0.1)") var cwLr: Float?
    @Flag(help: "No random start (pgd; default: a uniform random start in the ball).") var noRandomStart = false
    @Option(help: "Query budget per image of the query-only attacks (square, hsja). (default: 5000)") var queries: Int?
    @Option(help: "The AutoAttack ensemble: standard (APGD-CE, APGD-T, FAB-T, Square) or rand (APGD-CE and APGD-DLR with EOT, for randomised defenses). (default: standard)")
    var ensemble: AutoAttackEnsemble?
    @Option(help: "Runner-up classes targeted in turn (apgd-t, fab-t). (default: 9, capped at classes - 1)") var targetClasses: Int?
    @Flag(help: "Targeted: make the model predict --target-class.") var targeted = false
    @Option(help: "The class a targeted attack aims for.") var targetClass: Int?
    @Option(help: "Seed of every random choice.") var seed: UInt64 = 0
    @Option(help: "Images per batch.") var batchSize = 128
    @Option(help: "Where to write the adversarial images, by the name: X.npy (float32, the input's layout), X.idx (float32 IDX, type 0x0D), or a folder (no extension): one 8-bit PNG per image, named as the input folder's; the attack then ends on the 8-bit grid inside the ball and reports the written images.") var out: String
    @Option(help: "Write the metrics, every effective setting and the per-image results as JSON to this file.") var json: String?
    @Flag(help: "No progress output.") var quiet = false

    /// Whether each attack-specific option was given on the command line.
    private var given: [AttackOption: Bool] {
        [.eps: eps != nil, .norm: norm != nil, .steps: steps != nil, .alpha: alpha != nil, .restarts: restarts != nil,
         .overshoot: overshoot != nil, .theta: theta != nil, .gamma: gamma != nil, .kappa: kappa != nil,
         .cwConstant: cwConstant != nil, .searchSteps: searchSteps != nil, .cwLr: cwLr != nil, .noRandomStart: noRandomStart,
         .queries: queries != nil, .ensemble: ensemble != nil, .targetClasses: targetClasses != nil]
    }

    func validate() throws {
        for option in AttackOption.allCases where given[option] == true && !attack.options.contains(option) {
            throw ValidationError("\(option.flag) does not apply to --attack \(attack.rawValue); it is taken by \(option.takenBy.map(\.rawValue).joined(separator: ", "))")
        }
        if let norm, !attack.norms.contains(norm) {
            throw ValidationError("--attack \(attack.rawValue) runs in \(attack.norms.map(\.rawValue).joined(separator: " or ")) only, not --norm \(norm.rawValue)")
        }
        if let eps, !(eps.value >= 0) { throw ValidationError("--eps must be >= 0, got \(eps)") }
        if let steps, steps < 1 { throw ValidationError("--steps must be >= 1, got \(steps)") }
        if let alpha, !(alpha.value >= 0) { throw ValidationError("--alpha must be >= 0, got \(alpha)") }
        if let restarts, restarts < 1 { throw ValidationError("--restarts must be >= 1, got \(restarts)") }
        if let queries, queries < 1 { throw ValidationError("--queries must be >= 1, got \(queries)") }
        if let targetClasses, targetClasses < 1 { throw ValidationError("--target-classes must be >= 1, got \(targetClasses)") }
        if targeted && [.apgdT, .fabT, .autoattack].contains(attack) {
            throw ValidationError("\(attack.rawValue) chooses its own targets (the runner-up classes): drop --targeted")
        }
        if batchSize < 1 { throw ValidationError("--batch-size must be >= 1, got \(batchSize)") }
        if targeted && targetClass == nil { throw ValidationError("--targeted needs --target-class K") }
        if !targeted && targetClass != nil { throw ValidationError("--target-class needs --targeted") }
        if targeted && attack == .fgsmLL { throw ValidationError("fgsm-ll chooses its own target (the least likely class): drop --targeted") }
        try makeAttack().validate()
    }

    /// The attack with every setting resolved: what was given, else the attack's default.
    func makeAttack() -> Attack {
        let eps = self.eps?.value ?? 0.1, alpha = self.alpha?.value
        let norm = self.norm ?? attack.norms.first ?? .linf
        switch attack {
        case .fgsm, .fgsmLL: return FGSM(epsilon: eps, norm: norm)
        case .bim: return BIM(epsilon: eps, alpha: alpha, steps: steps, norm: norm)
        case .mifgsm: return BIM.momentum(epsilon: eps, alpha: alpha, steps: steps ?? 10)
        case .rfgsm: return RFGSM(epsilon: eps, alpha: alpha)
        case .pgd: return PGD(epsilon: eps, alpha: alpha, steps: steps ?? 40, norm: norm, randomStart: !noRandomStart, restarts: restarts ?? 1)
        case .apgd: return APGD(epsilon: eps, steps: steps ?? 100, norm: norm, restarts: restarts ?? 1)
        case .apgdDLR: return APGD(epsilon: eps, steps: steps ?? 100, norm: norm, loss: .dlr, restarts: restarts ?? 1)
        case .apgdT: return APGD(epsilon: eps, steps: steps ?? 100, norm: norm, loss: .targetedDLR, restarts: restarts ?? 1,
                                 targetClasses: targetClasses ?? 9)
        case .fab, .fabT: return FAB(epsilon: self.eps?.value, norm: norm, targeted: attack == .fabT, steps: steps ?? 100,
                                     restarts: restarts ?? 1, targetClasses: targetClasses ?? 9)
        case .square: return SquareAttack(epsilon: eps, norm: norm, queries: queries ?? 5000, restarts: restarts ?? 1)
        case .hsja: return HopSkipJump(norm: norm, queries: queries ?? 5000)
        case .autoattack:
            switch ensemble ?? .standard {
            case .standard: return AutoAttack.standard(epsilon: eps, norm: norm)
            case .rand: return AutoAttack.rand(epsilon: eps, norm: norm)
            }
        case .jsma: return JSMA(theta: theta ?? 1, gamma: gamma ?? 0.1)
        case .deepfool: return DeepFool(steps: steps ?? 50, overshoot: overshoot ?? 0.02, norm: norm)
        case .cw: return CarliniWagnerL2(confidence: kappa ?? 0, initialConstant: cwConstant ?? 1, binarySearchSteps: searchSteps ?? 5,
                                        steps: steps ?? 100, learningRate: cwLr ?? 0.1)
        }
    }

    func run() throws {
        try reportingErrors {
            try AttackOutput.check(out)
            if let json { try OutputPath.checkFile(json, option: "--json") }
            threads.apply()
            let (test, model) = try data.loadTest(model: modelPath, network)
            let goal: Goal = attack == .fgsmLL ? .leastLikely() : (targetClass.map { .targeted($0) } ?? .untargeted)
            if let k = targetClass, k < 0 || k >= test.classCount {
                throw AdvKitError.invalidArgument("--target-class \(k) is outside [0, \(test.classCount))")
            }
            var a = makeAttack()
            if defenses.defense == .detector && !defenses.oblivious {
                // The adaptive attack on a guarded model: one loss for the model and the detector.
                guard attack == .pgd, (norm ?? .linf) == .linf else {
                    throw AdvKitError.invalidArgument("--defense detector is attacked adaptively by detector-aware PGD (L-inf): use --attack pgd, or --oblivious")
                }
                guard restarts == nil, !noRandomStart else {
                    throw AdvKitError.invalidArgument("the detector-aware PGD runs one random start: drop --restarts and --no-random-start, or use --oblivious")
                }
                let det = try defenses.detectorNetwork(for: model, attack: makeAttack(), train: try data.load(.train), seed: seed, quiet: quiet)
                a = DetectorAwarePGD(detector: det, epsilon: eps?.value ?? 0.1, alpha: alpha?.value ?? 0.01, steps: steps ?? 40,
                                     lambda: defenses.detectorLambdaValue)
            }
            let target = try defenses.target(model, seed: seed)
            let progress: ProgressReporter.Style = quiet ? .silent : .automatic
            var extra: [String: Any] = [:]
            var result: AttackResult
            if let q = a as? QueryAttack {
                let r = try q.runCountingQueries(target, images: test.images, labels: test.labels, goal: goal, seed: seed,
                                                 batchSize: batchSize, progress: progress)
                result = r.result
                extra["queries"] = r.queries
                extra["mean_queries_of_successes"] = r.meanQueriesOfSuccesses as Any
                extra["median_queries_of_successes"] = r.medianQueriesOfSuccesses as Any
            } else if let aa = a as? AutoAttack {
                let r = try aa.runWithReport(target, images: test.images, labels: test.labels, goal: goal, seed: seed,
                                             batchSize: batchSize, progress: progress)
                result = r.result
                extra["broken_by"] = r.brokenBy.map { $0 as Any }
                extra["components"] = r.componentNames
                extra["component_seconds"] = r.componentSeconds
                extra["broken_counts"] = r.brokenCounts
            } else {
                result = try a.run(target, images: test.images, labels: test.labels, goal: goal, seed: seed,
                                   batchSize: batchSize, progress: progress)
            }
            result = try AttackOutput.write(result, attack: a, to: out, test: test, model: target)
            func fmt(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "-" }
            let usesEps = attack.options.contains(.eps) && !([.fab, .fabT].contains(attack) && eps == nil)
            let ran = a.settings
            let ball = usesEps ? ", \(ran["norm"].map { "\($0) " } ?? "")eps \(eps?.text ?? "0.1")" : ""
            print(String(format: "%@ (%@%@) on %d images: clean accuracy %.2f%%, robust accuracy %.2f%%, success rate %.2f%%",
                         a.name, goal.description, ball, test.count, result.cleanAccuracy * 100,
                         result.robustAccuracy * 100, result.successRate * 100))
            print("perturbation of successful images: median L2 \(fmt(result.medianL2)), median Linf \(fmt(result.medianLinf)), mean L2 \(fmt(result.meanL2)); \(String(format: "%.1f", result.seconds))s; wrote \(out)")
            let defenseMetrics = try defenses.evaluate(model: model, test: test, adversarial: result.adversarial, attack: makeAttack(),
                                                       train: { try data.load(.train) }, seed: seed, quiet: quiet)
            if let json {
                var settings: [String: Any] = a.settings.mapValues(\.jsonObject)
                settings["attack"] = a.name
                settings["goal"] = goal.description
                if let targetClass { settings["target_class"] = targetClass }
                settings["batch_size"] = batchSize
                settings["images"] = test.count
                settings["threads"] = Parallelism.threads
                settings["seed"] = seed
                if let e = eps { settings["eps_given_as"] = e.text }
                let perImage = outcomeRecords(result.outcomes)
                try writeJSON(["clean_accuracy": result.cleanAccuracy, "robust_accuracy": result.robustAccuracy,
                               "success_rate": result.successRate, "median_l2": result.medianL2 as Any,
                               "median_linf": result.medianLinf as Any, "mean_l2": result.meanL2 as Any,
                               "settings": settings, "seed": seed, "seconds": result.seconds, "per_image": perImage,
                               "model": try modelRecord(path: modelPath, arch: network.archRecord(modelPath)),
                               "data": data.record(for: test), "advkit_version": AdvKitVersion.string,
                               "defense": defenseMetrics.merging(defenses.settings) { a, _ in a }]
                              .merging(extra) { a, _ in a }, to: json)
            }
        }
    }
}
