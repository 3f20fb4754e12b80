import Foundation

/// Carlini & Wagner's L2 attack (2017):
///
///     minimise ‖x' − x‖₂² + c · f(x'),   x' = lo + (hi − lo)·(tanh(w) + 1)/2
///     f(x') = max(Z_y − max_{j≠y} Z_j, −κ)      untargeted
///     f(x') = max(max_{j≠t} Z_j − Z_t, −κ)      targeted
///
/// over w with Adam, and a binary search over c per image: success lowers c's upper bound, failure raises its
/// lower bound (×10 while no upper bound is known). Each image keeps its smallest successful perturbation.
/// The start is w = atanh((2(x − lo)/(hi − lo) − 1)·(1 − 1e-6)): pixels at exactly lo or hi start a hair
/// inside, so they can move (torchattacks' atanh(2x − 1) makes them infinite and frozen, which on
/// Fashion-MNIST's black backgrounds is most of the image).
/// - Parameters: confidence κ (0; the goal's margin is used when larger), initialConstant c₀ (1),
///   binarySearchSteps (5), steps (100 per search step), learningRate (0.1), abortEarly (true: stop a search
///   step when the loss has not improved for steps/10 iterations).
///
/// The learning rate: Adam moves every coordinate of w by about lr per step whatever its gradient's scale,
/// and a pixel that starts at a bound sits deep in tanh's saturation (w ≈ ±7). At the paper's 0.01 such
/// pixels cannot move within 100 steps; measured on the PyTorch-trained reference CNN (first 128 Fashion-MNIST
/// test images, 5 × 100 steps): lr 0.01 succeeds on 92.9% with median L2 1.08, lr 0.1 on 100% with 0.83.
public struct CarliniWagnerL2: Attack {
    public var confidence: Float
    public var initialConstant: Float
    public var binarySearchSteps: Int
    public var steps: Int
    public var learningRate: Float
    public var abortEarly: Bool
    public var name: String { "cw" }
    public var settings: [String: SettingValue] {
        ["confidence": .float(confidence), "initial_constant": .float(initialConstant),
         "binary_search_steps": .int(binarySearchSteps), "steps": .int(steps), "learning_rate": .float(learningRate),
         "abort_early": .bool(abortEarly), "norm": .string("l2")]
    }

    public init(confidence: Float = 0, initialConstant: Float = 1, binarySearchSteps: Int = 5, steps: Int = 100,
                learningRate: Float = 0.1, abortEarly: Bool = true) {
        self.confidence = confidence
        self.initialConstant = initialConstant
        self.binarySearchSteps = binarySearchSteps
        self.steps = steps
        self.learningRate = learningRate
        self.abortEarly = abortEarly
    }

    public func validate() throws {
        try checkEpsilon(confidence, "confidence")
        guard initialConstant.isFinite && initialConstant > 0 else { throw AdvKitError.invalidArgument("initial constant must be > 0, got \(initialConstant)") }
        try checkSteps(binarySearchSteps, "binary search steps")
        try checkSteps(steps)
        guard learningRate.isFinite && learningRate > 0 else { throw AdvKitError.invalidArgument("learning rate must be > 0, got \(learningRate)") }
    }

    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let n = batch.count, d = batch.images.shape.itemCount, k = model.classCount
        let lo = batch.bounds.lo, span = batch.bounds.hi - batch.bounds.lo
        let kappa = max(confidence, batch.goal.margin)
        let x0 = batch.images
        let w0 = x0.map { atanh((2 * ($0 - lo) / span - 1) * (1 - 1e-6)) }
        var c = [Float](repeating: initialConstant, count: n)
        var lower = [Float](repeating: 0, count: n), upper = [Float](repeating: 1e10, count: n)
        var best = x0
        var bestL2 = [Float](repeating: .infinity, count: n)
        let tape = Tape(mode: .inference)
        let cls = batch.lossClasses.map(Int.init)
        for _ in 0..<binarySearchSteps {
            var w = w0
            var m = Tensor(zeros: w.shape), v = Tensor(zeros: w.shape)
            var succeeded = [Bool](repeating: false, count: n)
            var previous = Float.infinity
            for step in 1...steps {
                var t = Tensor(uninitialized: w.shape), x = Tensor(uninitialized: w.shape)
                Kernels.tanhBox(t: &t, x: &x, w: w, lo: lo, span: span)
                tape.reset()
                let xv = tape.input(x)
                let z = model(xv)
                let zp = z.value.storage.pointer
                var seed = Tensor(zeros: [n, k])
                var total: Float = 0
                let xp = x.storage.pointer, x0p = x0.storage.pointer
                for i in 0..<n {
                    var l2sq: Float = 0
                    for j in 0..<d { let e = xp[i * d + j] - x0p[i * d + j]; l2sq += e * e }
                    let y = cls[i]
                    var other = -Float.infinity, oj = 0
                    for j in 0..<k where j != y && zp[i * k + j] > other { other = zp[i * k + j]; oj = j }
                    // margin > 0 means the goal is not reached with confidence κ yet.
                    let margin = batch.targets == nil ? zp[i * k + y] - other : other - zp[i * k + y]
                    let f = max(margin, -kappa)
                    total += l2sq + c[i] * f
                    if margin > -kappa {
                        let s: Float = batch.targets == nil ? 1 : -1
                        seed[i, y] = s * c[i]
                        seed[i, oj] = -s * c[i]
                    }
                    // Adversarial with the asked confidence: keep the smallest.
                    if margin <= -kappa {
                        let predicted = (0..<k).max { zp[i * k + $0] < zp[i * k + $1] }!
                        let goalMet = batch.targets == nil ? predicted != Int(batch.labels[i]) : predicted == y
                        if goalMet {
                            succeeded[i] = true
                            if l2sq < bestL2[i] {
                                bestL2[i] = l2sq
                                best.makeUnique()
                                (best.storage.pointer + i * d).update(from: xp + i * d, count: d)
                            }
                        }
                    }
                }
                if abortEarly && step % max(steps / 10, 1) == 0 {
                    if total > previous * 0.9999 { break }
                    previous = total
                }
                // dL/dx' = 2(x' − x) + c ∂f/∂x';  dL/dw = dL/dx' · (hi − lo)/2 · (1 − tanh²(w))
                var g = tape.gradient(of: z, seed: seed, wrt: xv)
                g.makeUnique()
                let gp = g.storage.pointer, tp = t.storage.pointer
                for j in 0..<(n * d) { gp[j] = (gp[j] + 2 * (xp[j] - x0p[j])) * span / 2 * (1 - tp[j] * tp[j]) }
                Kernels.adamStep(param: &w, m: &m, v: &v, grad: g, lr: learningRate, beta1: 0.9, beta2: 0.999,
                                 eps: 1e-8, weightDecay: 0, step: step)
            }
            for i in 0..<n {
                if succeeded[i] {
                    upper[i] = min(upper[i], c[i])
                    c[i] = (lower[i] + upper[i]) / 2
                } else {
                    lower[i] = max(lower[i], c[i])
                    c[i] = upper[i] < 1e9 ? (lower[i] + upper[i]) / 2 : c[i] * 10
                }
            }
        }
        return best
    }
}
