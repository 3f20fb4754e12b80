import Foundation

/// Anything an attack can attack: it maps images (N, C, H, W) to logits (N, classes) on a tape, so that
/// gradients with respect to the input can be taken. `Model` is one; defended models wrap one.
public protocol Classifier: AnyObject {
    var classCount: Int { get }
    /// (C, H, W) of one image.
    var inputShape: Shape { get }
    /// Records the logits of `x` on its tape.
    func callAsFunction(_ x: Variable) -> Variable
}

extension Classifier {
    /// Throws a clear error unless `images` is a batch (N, C, H, W) of this model's image shape.
    public func checkImages(_ images: Tensor) throws {
        guard images.shape.rank == 4, Shape(Array(images.shape.dims.dropFirst())) == inputShape else {
            let got = images.shape.rank == 4 ? "\(Shape(Array(images.shape.dims.dropFirst())))" : "a batch of shape \(images.shape)"
            throw AdvKitError.invalidData("the model takes images of shape \(inputShape) (C, H, W), got \(got)")
        }
    }

    /// Logits in inference mode, without keeping a tape.
    public func logits(of images: Tensor, batchSize: Int = 256) -> Tensor {
        let tape = Tape(mode: .inference)
        var parts: [Tensor] = []
        var start = 0
        while start < images.shape[0] {
            let end = min(start + batchSize, images.shape[0])
            tape.reset()
            parts.append(self(tape.input(start == 0 && end == images.shape[0] ? images : images.batch(start..<end))).value)
            start = end
        }
        return parts.isEmpty ? Tensor(zeros: [0, classCount]) : (parts.count == 1 ? parts[0] : Tensor.concatenate(parts))
    }
}

/// What the attacker wants.
public struct Goal: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// "The true class must never win": any wrong prediction is a success (a denial of service).
        case untargeted
        /// "A chosen class must win": one target class for every image (an impersonation).
        case targeted(Int)
        /// One target class per image.
        case targets([Int32])
        /// The class the model finds least likely on the clean image (Kurakin et al. 2017).
        case leastLikely
    }

    public var kind: Kind
    /// For targeted goals: the target logit must beat every other by at least this margin to count
    /// ("with high confidence"). 0: winning is enough.
    public var margin: Float

    public static let untargeted = Goal(kind: .untargeted, margin: 0)
    public static func targeted(_ cls: Int, margin: Float = 0) -> Goal { Goal(kind: .targeted(cls), margin: margin) }
    public static func targets(_ classes: [Int32], margin: Float = 0) -> Goal { Goal(kind: .targets(classes), margin: margin) }
    public static func leastLikely(margin: Float = 0) -> Goal { Goal(kind: .leastLikely, margin: margin) }

    public var isTargeted: Bool { kind != .untargeted }

    public var description: String {
        switch kind {
        case .untargeted: return "untargeted"
        case let .targeted(k): return "targeted(class \(k))"
        case .targets: return "targeted(per image)"
        case .leastLikely: return "least-likely"
        }
    }

    /// Per-image target classes, or nil when untargeted.
    func resolveTargets(count: Int, cleanLogits: Tensor, classes: Int) throws -> [Int32]? {
        switch kind {
        case .untargeted: return nil
        case let .targeted(k):
            guard k >= 0 && k < classes else { throw AdvKitError.invalidArgument("target class \(k) is outside [0, \(classes))") }
            return [Int32](repeating: Int32(k), count: count)
        case let .targets(t):
            guard t.count == count else { throw AdvKitError.invalidArgument("\(t.count) target classes for \(count) images") }
            if let bad = t.first(where: { $0 < 0 || Int($0) >= classes }) {
                throw AdvKitError.invalidArgument("target class \(bad) is outside [0, \(classes))")
            }
            return t
        case .leastLikely:
            return cleanLogits.map { -$0 }.argmaxRows().map(Int32.init)
        }
    }
}

/// The norm of a threat model's ball.
public enum Norm: String, Sendable, Codable, CaseIterable {
    case linf, l2
}

/// The result for one image.
public struct AttackOutcome: Sendable, Codable, Equatable {
    public var label: Int
    public var target: Int?
    /// The attack reached its goal on this image (the model was right on the clean image, and is now wrong, or
    /// predicts the target with the asked margin).
    public var success: Bool
    public var cleanPrediction: Int
    public var cleanConfidence: Float
    public var adversarialPrediction: Int
    public var adversarialConfidence: Float
    /// Perturbation size: pixels changed by more than 1e-6, Euclidean norm, largest change.
    public var l0: Float, l2: Float, linf: Float

    enum CodingKeys: String, CodingKey {
        case label, target, success, l0, l2, linf
        case cleanPrediction = "clean_prediction", cleanConfidence = "clean_confidence"
        case adversarialPrediction = "adversarial_prediction", adversarialConfidence = "adversarial_confidence"
    }
}

/// Adversarial images and what they did.
public struct AttackResult {
    public var attack: String
    public var goal: Goal
    public var adversarial: Tensor
    public var outcomes: [AttackOutcome]
    public var seconds: Double

    /// Share of clean images the model classifies correctly.
    public var cleanAccuracy: Double { share { $0.cleanPrediction == $0.label } }
    /// Share of adversarial images the model still classifies correctly.
    public var robustAccuracy: Double { share { $0.adversarialPrediction == $0.label } }
    /// Of the images the model got right (and, when targeted, whose label is not the target), the share the
    /// attack turned wrong (or into the target).
    public var successRate: Double {
        let eligible = outcomes.filter { $0.cleanPrediction == $0.label && $0.target != $0.label }
        return eligible.isEmpty ? 0 : Double(eligible.filter(\.success).count) / Double(eligible.count)
    }
    /// Median L2 / Linf and mean L2 of the perturbations of successful images (nil when none succeeded).
    public var medianL2: Double? { median(outcomes.filter(\.success).map { Double($0.l2) }) }
    public var medianLinf: Double? { median(outcomes.filter(\.success).map { Double($0.linf) }) }
    public var meanL2: Double? {
        let s = outcomes.filter(\.success).map { Double($0.l2) }
        return s.isEmpty ? nil : s.reduce(0, +) / Double(s.count)
    }

    private func share(_ pred: (AttackOutcome) -> Bool) -> Double {
        outcomes.isEmpty ? 0 : Double(outcomes.filter(pred).count) / Double(outcomes.count)
    }
}

func median(_ xs: [Double]) -> Double? {
    guard !xs.isEmpty else { return nil }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Pixel bounds of valid images.
public struct PixelBounds: Sendable, Equatable {
    public var lo: Float, hi: Float
    public init(_ lo: Float = 0, _ hi: Float = 1) {
        precondition(lo < hi, "pixel bounds need lo < hi, got [\(lo), \(hi)]")
        self.lo = lo
        self.hi = hi
    }
    public static let unit = PixelBounds(0, 1)
}

/// One batch of an attack: what an attack's `perturb` sees.
public struct AttackBatch {
    /// Clean images (n, C, H, W).
    public var images: Tensor
    public var labels: [Int32]
    /// Per-image targets when the goal is targeted.
    public var targets: [Int32]?
    public var goal: Goal
    public var bounds: PixelBounds
    /// Index of this batch's first image in the whole set: random draws are keyed by it, so the numbers do
    /// not depend on the batch size or the thread count.
    public var offset: Int
    public var seed: UInt64

    /// The class each image's loss is taken against: the target when targeted, else the label.
    /// A batch as an attack's `perturb` sees it; `run` builds these, tests and custom drivers may too.
    public init(images: Tensor, labels: [Int32], targets: [Int32]? = nil, goal: Goal = .untargeted,
                bounds: PixelBounds = .unit, offset: Int = 0, seed: UInt64 = 0) {
        self.images = images
        self.labels = labels
        self.targets = targets
        self.goal = goal
        self.bounds = bounds
        self.offset = offset
        self.seed = seed
    }

    public var lossClasses: [Int32] { targets ?? labels }
    public var count: Int { labels.count }
}

/// An adversarial attack. Implementations provide `perturb` for one batch; `run` does the rest (validation,
/// batching, targets, seeds, metrics).
public protocol Attack {
    /// A short name ("pgd").
    var name: String { get }
    /// Every setting that shapes the result, defaults included (recorded in JSON as it ran).
    var settings: [String: SettingValue] { get }
    /// Checks the settings; throws a clear error naming the bad one.
    func validate() throws
    /// Adversarial images for one batch, inside the bounds and the attack's ball.
    func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor
}

extension Attack {
    public func validate() throws {}

    /// The adversarial images alone: validation, targets, batching and seeds as `run`, without measuring the
    /// outcome (the benchmarks time this, as the Python libraries' attack calls are timed).
    public func generate(_ model: Classifier, images: Tensor, labels: [Int32], goal: Goal = .untargeted,
                         bounds: PixelBounds = .unit, seed: UInt64 = 0, batchSize: Int = 128,
                         progress: ProgressReporter.Style = .silent) throws -> Tensor {
        try generateWithTargets(model, images: images, labels: labels, goal: goal, bounds: bounds, seed: seed,
                                batchSize: batchSize, progress: progress, cleanLogits: nil).adversarial
    }

    /// Runs the attack on `images` with `labels`, `batchSize` images at a time, and measures every image.
    public func run(_ model: Classifier, images: Tensor, labels: [Int32], goal: Goal = .untargeted,
                    bounds: PixelBounds = .unit, seed: UInt64 = 0, batchSize: Int = 128,
                    progress: ProgressReporter.Style = .silent) throws -> AttackResult {
        let started = Date()
        try checkInputs(model, images: images, labels: labels, goal: goal, bounds: bounds, batchSize: batchSize)
        let clean = model.logits(of: images)
        let (adversarial, targets) = try generateWithTargets(model, images: images, labels: labels, goal: goal,
                                                             bounds: bounds, seed: seed, batchSize: batchSize,
                                                             progress: progress, cleanLogits: clean)
        let outcomes = AttackOutcomes.evaluate(model, clean: images, cleanLogits: clean, adversarial: adversarial,
                                               labels: labels, targets: targets, margin: goal.margin)
        let result = AttackResult(attack: name, goal: goal, adversarial: adversarial, outcomes: outcomes,
                                  seconds: Date().timeIntervalSince(started))
        if progress != .silent {
            ProgressReporter("\(name) \(goal)", total: 1, style: progress)
                .finish(String(format: "robust accuracy %.2f%%, success %.2f%%, %.1fs", result.robustAccuracy * 100,
                               result.successRate * 100, result.seconds))
        }
        return result
    }

    /// Checks images, labels, bounds and settings; the error names the first problem.
    func checkInputs(_ model: Classifier, images: Tensor, labels: [Int32], goal: Goal, bounds: PixelBounds,
                     batchSize: Int) throws {
        try validate()
        guard batchSize >= 1 else { throw AdvKitError.invalidArgument("batch size must be >= 1, got \(batchSize)") }
        guard images.shape.rank == 4, images.shape[0] == labels.count else {
            throw AdvKitError.invalidData("\(labels.count) labels for images of shape \(images.shape)")
        }
        try model.checkImages(images)
        if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= model.classCount }) {
            throw AdvKitError.invalidData("label \(bad) is \(labels[bad]), outside [0, \(model.classCount))")
        }
        try Dataset.validatePixels(images, name: "the images", lo: bounds.lo, hi: bounds.hi)
        if goal.margin < 0 || !goal.margin.isFinite { throw AdvKitError.invalidArgument("the confidence margin must be >= 0, got \(goal.margin)") }
    }

    func generateWithTargets(_ model: Classifier, images: Tensor, labels: [Int32], goal: Goal, bounds: PixelBounds,
                             seed: UInt64, batchSize: Int, progress: ProgressReporter.Style,
                             cleanLogits: Tensor?) throws -> (adversarial: Tensor, targets: [Int32]?) {
        if cleanLogits == nil {
            try checkInputs(model, images: images, labels: labels, goal: goal, bounds: bounds, batchSize: batchSize)
        }
        let n = labels.count
        // Least-likely targets need the clean logits; other goals do not.
        let clean = cleanLogits ?? (goal.kind == .leastLikely ? model.logits(of: images) : Tensor(zeros: [n, model.classCount]))
        let targets = try goal.resolveTargets(count: n, cleanLogits: clean, classes: model.classCount)
        var parts: [Tensor] = []
        let bar = ProgressReporter("\(name) \(goal)", total: n, style: progress)
        var start = 0
        while start < n {
            let end = min(start + batchSize, n)
            let batch = AttackBatch(images: images.batch(start..<end), labels: Array(labels[start..<end]),
                                    targets: targets.map { Array($0[start..<end]) }, goal: goal, bounds: bounds,
                                    offset: start, seed: seed)
            let adv = perturb(model, batch)
            precondition(adv.shape == batch.images.shape, "\(name) returned shape \(adv.shape) for \(batch.images.shape)")
            parts.append(adv)
            start = end
            bar.update(end)
        }
        let adversarial = parts.isEmpty ? images : (parts.count == 1 ? parts[0] : Tensor.concatenate(parts))
        return (adversarial, targets)
    }
}

enum AttackOutcomes {
    static func evaluate(_ model: Classifier, clean: Tensor, cleanLogits: Tensor, adversarial: Tensor, labels: [Int32],
                         targets: [Int32]?, margin: Float) -> [AttackOutcome] {
        let advLogits = model.logits(of: adversarial)
        let pc = Kernels.softmax(cleanLogits), pa = Kernels.softmax(advLogits)
        let cp = cleanLogits.argmaxRows(), ap = advLogits.argmaxRows()
        let norms = Kernels.diffNorms(adversarial, clean, tolerance: 1e-6)
        let k = cleanLogits.shape[1]
        return (0..<labels.count).map { i in
            let y = Int(labels[i]), t = targets.map { Int($0[i]) }
            var success = Goal.isReached(advLogits.storage.pointer + i * k, classes: k, label: y, target: t, margin: margin)
            if let t { success = success && t != y }
            success = success && cp[i] == y  // an image the model already got wrong is not the attack's success
            return AttackOutcome(label: y, target: t, success: success, cleanPrediction: cp[i],
                                 cleanConfidence: pc.storage.pointer[i * k + cp[i]], adversarialPrediction: ap[i],
                                 adversarialConfidence: pa.storage.pointer[i * k + ap[i]], l0: norms.l0[i],
                                 l2: norms.l2[i], linf: norms.linf[i])
        }
    }
}

/// The loss an attack ascends and its input gradient, on one reusable tape (no per-step allocation once warm).
///
/// Untargeted: the cross-entropy of the true class (ascend: move away from it). Targeted: minus the
/// cross-entropy of the target (ascend: move towards it). Per-sample losses, so each image's gradient is its
/// own loss's.
public final class AttackLoss {
    let tape = Tape(mode: .inference)
    private var ones = Tensor(zeros: [0])

    public init() {}

    /// The input gradient of the per-image losses (each image's own), the logits and the losses at the point.
    public struct Evaluation {
        public var gradient: Tensor
        public var logits: Tensor
        public var losses: Tensor
    }

    /// Loss and input gradient at `x` for `batch`'s goal. The tape is reset afterwards, so `x` can be updated
    /// in place without a copy.
    public func evaluate(_ model: Classifier, _ x: Tensor, _ batch: AttackBatch) -> Evaluation {
        tape.reset()
        let v = tape.input(x)
        let logits = model(v)
        let ce = tape.crossEntropy(logits, labels: batch.lossClasses)
        let sign = batch.ascentSign
        if ones.count != batch.count || ones.storage.pointer[0] != sign { ones = Tensor(repeating: sign, shape: [batch.count]) }
        let g = tape.gradient(of: ce, seed: ones, wrt: v)
        let e = Evaluation(gradient: g, logits: logits.value, losses: ce.value)
        tape.reset()
        return e
    }
}

func checkEpsilon(_ eps: Float, _ name: String = "epsilon") throws {
    guard eps.isFinite && eps >= 0 else { throw AdvKitError.invalidArgument("\(name) must be a finite number >= 0, got \(eps)") }
}

func checkSteps(_ steps: Int, _ name: String = "steps") throws {
    guard steps >= 1 else { throw AdvKitError.invalidArgument("\(name) must be >= 1, got \(steps)") }
}
