import AdvKit
import ArgumentParser
import Foundation

enum AttackName: String, ExpressibleByArgument, CaseIterable {
    case fgsm, fgsmLL = "fgsm-ll", bim, mifgsm, rfgsm, pgd, apgd, jsma, deepfool, cw
}

extension Norm: ExpressibleByArgument {}

struct AttackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attack",
        abstract: "Attack a model: write adversarial images (float32 IDX) and print clean and robust accuracy.")

    @OptionGroup var data: DataOptions
    @OptionGroup var network: ModelOptions
    @OptionGroup var threads: ThreadOptions
    @OptionGroup var defenses: DefenseOptions

    @Option(name: .customLong("model"), help: "The model (.safetensors).") var modelPath: String
    @Option(help: "The attack: \(AttackName.allCases.map(\.rawValue).joined(separator: ", ")).") var attack: AttackName
    @Option(help: "Radius of the threat model's ball.") var eps: Float = 0.1
    @Option(help: "Norm: linf or l2 (pgd: the ball, default linf; deepfool: the distance, default l2).") var norm: Norm?
    @Option(help: "Iterations (bim, mifgsm, pgd).") var steps: Int?
    @Option(help: "Step size (bim, mifgsm, rfgsm, pgd).") var alpha: Float?
    @Option(help: "Random restarts, keeping each image's worst case (pgd).") var restarts = 1
    @Option(help: "Overshoot of the total perturbation (deepfool).") var overshoot: Float = 0.02
    @Option(help: "Change per pixel, theta (jsma).") var theta: Float = 1
    @Option(help: "Largest fraction of pixels changed, gamma (jsma).") var gamma: Float = 0.1
    @Option(help: "Confidence margin kappa (cw).") var kappa: Float = 0
    @Option(help: "Initial constant c (cw).") var cwConstant: Float = 1
    @Option(help: "Binary search steps over c (cw).") var searchSteps = 5
    @Option(help: "Learning rate of Adam (cw).") var cwLr: Float = 0.1
    @Flag(help: "No random start (pgd).") var noRandomStart = false
    @Flag(help: "Targeted: make the model predict --target-class.") var targeted = false
    @Option(help: "The class a targeted attack aims for.") var targetClass: Int?
    @Option(help: "Seed of every random choice.") var seed: UInt64 = 0
    @Option(help: "Images per batch.") var batchSize = 128
    @Option(help: "Where to write the adversarial images (float32 IDX, type 0x0D).") var out: String
    @Option(help: "Write the metrics and per-image results as JSON to this file.") var json: String?
    @Flag(help: "No progress output.") var quiet = false

    func validate() throws {
        if !(eps.isFinite && eps >= 0) { throw ValidationError("--eps must be a number >= 0, got \(eps)") }
        if let steps, steps < 1 { throw ValidationError("--steps must be >= 1, got \(steps)") }
        if let alpha, !(alpha.isFinite && alpha >= 0) { throw ValidationError("--alpha must be a number >= 0, got \(alpha)") }
        if restarts < 1 { throw ValidationError("--restarts must be >= 1, got \(restarts)") }
        if batchSize < 1 { throw ValidationError("--batch-size must be >= 1, got \(batchSize)") }
        if targeted && targetClass == nil { throw ValidationError("--targeted needs --target-class K") }
        if !targeted && targetClass != nil { throw ValidationError("--target-class needs --targeted") }
        if targeted && attack == .fgsmLL { throw ValidationError("fgsm-ll chooses its own target (the least likely class): drop --targeted") }
    }

    func makeAttack() -> Attack {
        switch attack {
        case .fgsm, .fgsmLL: return FGSM(epsilon: eps)
        case .bim: return BIM(epsilon: eps, alpha: alpha, steps: steps)
        case .mifgsm: return BIM.momentum(epsilon: eps, alpha: alpha, steps: steps ?? 10)
        case .rfgsm: return RFGSM(epsilon: eps, alpha: alpha)
        case .pgd: return PGD(epsilon: eps, alpha: alpha, steps: steps ?? 40, norm: norm ?? .linf, randomStart: !noRandomStart, restarts: restarts)
        case .apgd: return APGD(epsilon: eps, steps: steps ?? 100, norm: norm ?? .linf)
        case .jsma: return JSMA(theta: theta, gamma: gamma)
        case .deepfool: return DeepFool(steps: steps ?? 50, overshoot: overshoot, norm: norm ?? .l2)
        case .cw: return CarliniWagnerL2(confidence: kappa, initialConstant: cwConstant, binarySearchSteps: searchSteps,
                                        steps: steps ?? 100, learningRate: cwLr)
        }
    }

    func run() throws {
        try reportingErrors {
            threads.apply()
            let test = try data.load(.test)
            let model = try network.load(modelPath, for: test)
            let goal: Goal = attack == .fgsmLL ? .leastLikely() : (targetClass.map { .targeted($0) } ?? .untargeted)
            if let k = targetClass, k < 0 || k >= test.classCount {
                throw AdvKitError.invalidArgument("--target-class \(k) is outside [0, \(test.classCount))")
            }
            var a = makeAttack()
            if defenses.defense == .detector && !defenses.oblivious {
                // The adaptive attack on a guarded model: one loss for the model and the detector.
                guard case .linf = norm ?? .linf, [.pgd, .bim, .fgsm].contains(attack) else {
                    throw AdvKitError.invalidArgument("--defense detector attacks adaptively with PGD (L-inf): use --attack pgd, or --oblivious")
                }
                let det = try defenses.detectorNetwork(for: model, attack: makeAttack(), train: try data.load(.train), seed: seed, quiet: quiet)
                a = DetectorAwarePGD(detector: det, epsilon: eps, alpha: alpha ?? 0.01, steps: steps ?? 40, lambda: defenses.detectorLambda)
            }
            let target = try defenses.target(model, seed: seed)
            let result = try a.run(target, images: test.images, labels: test.labels, goal: goal, seed: seed,
                                   batchSize: batchSize, progress: quiet ? .silent : .automatic)
            try IDX.write(result.adversarial, to: out)
            func fmt(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "-" }
            let usesEps = ![.jsma, .deepfool, .cw].contains(attack)
            print(String(format: "%@ (%@%@) on %d images: clean accuracy %.2f%%, robust accuracy %.2f%%, success rate %.2f%%",
                         attack.rawValue, goal.description, usesEps ? String(format: ", eps %g", eps) : "", test.count, result.cleanAccuracy * 100,
                         result.robustAccuracy * 100, result.successRate * 100))
            print("perturbation of successful images: median L2 \(fmt(result.medianL2)), median Linf \(fmt(result.medianLinf)), mean L2 \(fmt(result.meanL2)); \(String(format: "%.1f", result.seconds))s; wrote \(out)")
            let defenseMetrics = try defenses.evaluate(model: model, test: test, adversarial: result.adversarial, attack: makeAttack(),
                                                       train: { try data.load(.train) }, seed: seed, quiet: quiet)
            if let json {
                var settings: [String: Any] = ["attack": attack.rawValue, "eps": usesEps ? eps as Any : NSNull(), "norm": (norm ?? (attack == .deepfool ? .l2 : .linf)).rawValue, "goal": goal.description,
                                               "batch_size": batchSize, "model": modelPath, "arch": network.arch.rawValue,
                                               "images": test.count, "threads": Parallelism.threads]
                if let steps { settings["steps"] = steps }
                if let alpha { settings["alpha"] = alpha }
                if attack == .pgd { settings["restarts"] = restarts; settings["random_start"] = !noRandomStart }
                if let targetClass { settings["target_class"] = targetClass }
                let perImage = try JSONSerialization.jsonObject(with: JSONEncoder().encode(result.outcomes))
                try writeJSON(["clean_accuracy": result.cleanAccuracy, "robust_accuracy": result.robustAccuracy,
                               "success_rate": result.successRate, "median_l2": result.medianL2 as Any,
                               "median_linf": result.medianLinf as Any, "mean_l2": result.meanL2 as Any,
                               "settings": settings, "seed": seed, "seconds": result.seconds, "per_image": perImage,
                               "defense": defenseMetrics], to: json)
            }
        }
    }
}
