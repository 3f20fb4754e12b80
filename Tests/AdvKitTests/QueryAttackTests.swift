import AdvKit
import AdvKitTestSupport
import XCTest

/// A classifier with a tripwire on its output: the logits pass through a custom tape node whose pullback counts.
/// Any gradient of anything computed from the logits, towards the input or the weights, has to run that
/// pullback (it is the only way back from the logits into the model), so `gradients == 0` after an attack means
/// the attack never differentiated through the model. FGSM on it is the positive control (it must trip it).
private final class GradientTripwire: Classifier {
    let base: Classifier
    private(set) var forwards = 0
    private(set) var gradients = 0
    var classCount: Int { base.classCount }
    var inputShape: Shape { base.inputShape }

    init(_ base: Classifier) { self.base = base }

    func callAsFunction(_ x: Variable) -> Variable {
        forwards += 1
        let z = base(x)
        return x.tape.custom([z], value: z.value) { [unowned self] g in
            self.gradients += 1
            return [g]
        }
    }
}

/// Square and HopSkipJump, tested by their properties (ball, bounds, budget, no gradient, same images at any
/// batch size) and by their effect on the reference CNN trained in the test and on two defended versions of it
/// whose gradients are masked (Gaussian noise, feature squeezing).
final class QueryAttackTests: XCTestCase {
    private static var cached: (Model, Dataset)?

    private func setup(_ n: Int) throws -> (Model, Dataset) {
        if Self.cached == nil {
            let (model, test) = try trainedReferenceCNN()
            XCTAssertGreaterThan(model.accuracy(test.images, labels: test.labels), 0.7, "the model trained in the test learned")
            Self.cached = (model, test)
        }
        return (Self.cached!.0, Self.cached!.1.prefix(n))
    }

    private func assertInside(_ r: AttackResult, norm: Norm, epsilon: Float, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertGreaterThanOrEqual(r.adversarial.min(), 0, "\(r.attack): below the pixel bounds", file: file, line: line)
        XCTAssertLessThanOrEqual(r.adversarial.max(), 1, "\(r.attack): above the pixel bounds", file: file, line: line)
        for (i, o) in r.outcomes.enumerated() {
            let size = norm == .linf ? o.linf : o.l2
            // float32 rounding of x ± ε (L∞) and of a sum over 784 squares (L2)
            XCTAssertLessThanOrEqual(size, epsilon * (1 + 1e-5) + 1e-6, "\(r.attack) image \(i): \(norm) \(size) > \(epsilon)", file: file, line: line)
        }
    }

    func testSquareStaysInsideTheBallAndThePixelBounds() throws {
        let (model, d) = try setup(24)
        for (norm, eps) in [(Norm.linf, Float(0.1)), (.l2, 1.5)] {
            for goal in [Goal.untargeted, .targeted(8)] {
                let r = try SquareAttack(epsilon: eps, norm: norm, queries: 200).run(model, images: d.images, labels: d.labels, goal: goal, seed: 1)
                assertInside(r, norm: norm, epsilon: eps)
                XCTAssertLessThan(r.robustAccuracy, r.cleanAccuracy, "\(r.attack) \(goal) hurts the model")
            }
        }
    }

    func testEveryImageStaysWithinItsQueryBudget() throws {
        let (model, d) = try setup(16)
        let square = try SquareAttack(epsilon: 0.05, queries: 60, restarts: 2).runCountingQueries(model, images: d.images, labels: d.labels, seed: 2)
        XCTAssertEqual(square.queries.count, 16)
        for (i, (q, o)) in zip(square.queries, square.result.outcomes).enumerated() {
            XCTAssertLessThanOrEqual(q, 120, "square image \(i)")
            if o.cleanPrediction != o.label {
                XCTAssertEqual(q, 1, "square image \(i) was wrong already: only its clean check")
            } else if !o.success {
                XCTAssertEqual(q, 120, "square image \(i) was never fooled: it spent its whole budget (2 restarts x 60)")
            }
        }
        XCTAssertTrue(square.queries.contains(120), "eps 0.05 and 60 queries leave some image unfooled")
        XCTAssertNotNil(square.medianQueriesOfSuccesses)

        for norm in [Norm.l2, .linf] {
            let hsja = try HopSkipJump(norm: norm, queries: 400).runCountingQueries(model, images: d.images.batch(0..<6), labels: Array(d.labels.prefix(6)))
            for (i, q) in hsja.queries.enumerated() { XCTAssertLessThanOrEqual(q, 400, "\(hsja.result.attack) image \(i)") }
            XCTAssertGreaterThan(hsja.queries.max()!, 300, "\(hsja.result.attack) uses most of its budget")
        }
    }

    func testQueryAttacksNeverTakeAGradient() throws {
        let (model, d) = try setup(6)
        let control = GradientTripwire(model)
        _ = try FGSM(epsilon: 0.1).run(control, images: d.images, labels: d.labels)
        XCTAssertGreaterThan(control.gradients, 0, "the tripwire catches a gradient attack")

        let attacks: [Attack] = [SquareAttack(epsilon: 0.1, queries: 50), SquareAttack(epsilon: 1, norm: .l2, queries: 50),
                                 HopSkipJump(queries: 200), HopSkipJump(norm: .linf, queries: 200)]
        for a in attacks {
            let trap = GradientTripwire(model)
            _ = try a.run(trap, images: d.images, labels: d.labels)
            XCTAssertGreaterThan(trap.forwards, 10, "\(a.name) queried the model")
            XCTAssertEqual(trap.gradients, 0, "\(a.name) took a gradient through the model")
        }
    }

    func testSquareReducesRobustAccuracyWithin1000Queries() throws {
        let (model, d) = try setup(48)
        let r = try SquareAttack(epsilon: 0.1, queries: 1000).runCountingQueries(model, images: d.images, labels: d.labels)
        XCTAssertGreaterThan(r.result.cleanAccuracy, 0.7)
        // Square within 1,000 queries takes away a large share of the clean accuracy (5,000 queries on the
        // PyTorch-trained model: 89.4% -> 9.5%, as torchattacks; scripts/crosscheck/square.py).
        XCTAssertLessThan(r.result.robustAccuracy, 0.6 * r.result.cleanAccuracy,
                          "robust \(r.result.robustAccuracy) vs clean \(r.result.cleanAccuracy)")
        XCTAssertLessThanOrEqual(r.queries.max()!, 1000)
        let l2 = try SquareAttack(epsilon: 2, norm: .l2, queries: 1000).run(model, images: d.images, labels: d.labels)
        XCTAssertLessThan(l2.robustAccuracy, 0.6 * l2.cleanAccuracy, "square-l2 at eps 2")
    }

    func testHopSkipJumpShrinksThePerturbationOverIterations() throws {
        let (model, d) = try setup(8)
        for norm in [Norm.l2, .linf] {
            var previous = Double.infinity
            for iterations in [1, 3, 8] {
                let r = try HopSkipJump(norm: norm, queries: 3000, iterations: iterations).run(model, images: d.images, labels: d.labels, seed: 4)
                // A decision-based attack always ends on the adversarial side: every image the model got right.
                let eligible = r.outcomes.filter { $0.cleanPrediction == $0.label }
                XCTAssertEqual(eligible.filter(\.success).count, eligible.count, "\(r.attack) \(iterations) iterations")
                XCTAssertGreaterThanOrEqual(r.adversarial.min(), 0)
                XCTAssertLessThanOrEqual(r.adversarial.max(), 1)
                let size = norm == .l2 ? r.medianL2! : r.medianLinf!
                XCTAssertLessThan(size, previous, "\(r.attack): median \(norm) after \(iterations) iterations")
                previous = size
            }
        }
    }

    func testTargetedQueryAttacksReachTheTarget() throws {
        let (model, d) = try setup(12)
        let target = 8  // "Bag"
        let square = try SquareAttack(epsilon: 0.3, queries: 500).run(model, images: d.images, labels: d.labels, goal: .targeted(target))
        let hsja = try HopSkipJump(queries: 1500).run(model, images: d.images, labels: d.labels, goal: .targeted(target))
        for r in [square, hsja] {
            for o in r.outcomes where o.success { XCTAssertEqual(o.adversarialPrediction, target, r.attack) }
            XCTAssertGreaterThanOrEqual(r.successRate, 0.5, "\(r.attack) reaches the target on most images")
        }
    }

    func testTheSameSeedGivesTheSameImagesAtAnyBatchSize() throws {
        let (model, d) = try setup(10)
        let attacks: [Attack] = [SquareAttack(epsilon: 0.05, queries: 80), SquareAttack(epsilon: 0.5, norm: .l2, queries: 80),
                                 HopSkipJump(queries: 250), HopSkipJump(norm: .linf, queries: 250)]
        for a in attacks {
            let whole = try a.generate(model, images: d.images, labels: d.labels, seed: 9, batchSize: 10)
            let pieces = try a.generate(model, images: d.images, labels: d.labels, seed: 9, batchSize: 3)
            XCTAssertEqual(whole, pieces, "\(a.name): batch size changed the images")
            let other = try a.generate(model, images: d.images, labels: d.labels, seed: 10, batchSize: 10)
            XCTAssertNotEqual(whole, other, "\(a.name): the seed changes the draws")
        }
    }

    func testQueryAttacksBeatDefensesThatMaskGradients() throws {
        let (model, d) = try setup(24)
        let defended: [(String, Classifier)] = [("noise", NoisyClassifier(model, sigma: 0.1, seed: 5)),
                                                ("squeezing", SqueezedClassifier(model, squeezers: [.bitDepth(3)]))]
        for (name, classifier) in defended {
            let square = try SquareAttack(epsilon: 0.1, queries: 1000).runCountingQueries(classifier, images: d.images, labels: d.labels)
            assertInside(square.result, norm: .linf, epsilon: 0.1)
            XCTAssertLessThanOrEqual(square.queries.max()!, 1000)
            // Noise also blurs Square's view (each query is one noisy draw), so less is taken away there: of the 24
            // images it broke 3 with the convolutions' direct sums and 2 with the 6x6 Winograd route (winograd6.c;
            // the model trained in the test differs in the last bits), and 3 of 48 with either. Squeezing: a fifth.
            let broken = Int(((square.result.cleanAccuracy - square.result.robustAccuracy) * 24).rounded())
            XCTAssertGreaterThanOrEqual(broken, name == "noise" ? 2 : 5,
                                        "square against \(name): robust \(square.result.robustAccuracy), clean \(square.result.cleanAccuracy)")

            let hsja = try HopSkipJump(queries: 600).runCountingQueries(classifier, images: d.images.batch(0..<8), labels: Array(d.labels.prefix(8)))
            XCTAssertLessThanOrEqual(hsja.queries.max()!, 600)
            XCTAssertGreaterThanOrEqual(hsja.result.adversarial.min(), 0)
            XCTAssertLessThanOrEqual(hsja.result.adversarial.max(), 1)
            // HopSkipJump ends on the decision boundary. Squeezing is deterministic, so its end points stay
            // adversarial. Under noise the boundary is where a fresh draw is a coin flip (measured: 1 to 3 of 7),
            // so only the budget and the bounds are asserted there: HopSkipJump without repeated queries is not
            // the attack for a randomised model (Square is, above).
            if name == "squeezing" { XCTAssertGreaterThan(hsja.result.successRate, 0.7, "hsja against \(name)") }
        }
    }

    func testSquareScheduleAndWindows() {
        // The paper's schedule on 10,000 queries, rescaled to 5,000: halved after iteration 5, 25, 100, ...
        let p = { SquareAttack.windowFraction(iteration: $0, queries: 5000, pInit: 0.8) }
        XCTAssertEqual(p(0), 0.8)
        XCTAssertEqual(p(5), 0.8)
        XCTAssertEqual(p(6), 0.4)
        XCTAssertEqual(p(25), 0.4)
        XCTAssertEqual(p(26), 0.2)
        XCTAssertEqual(p(2000), 0.8 / 64)
        XCTAssertEqual(p(4999), 0.8 / 512)
        XCTAssertEqual(SquareAttack.windowSide(fraction: 0.8, height: 28, width: 28, norm: .linf), 25)  // round(√(0.8·784)) = 25
        XCTAssertEqual(SquareAttack.windowSide(fraction: 0.8 / 512, height: 28, width: 28, norm: .linf), 1)
        XCTAssertEqual(SquareAttack.windowSide(fraction: 0.8 / 512, height: 28, width: 28, norm: .l2), 3)
        XCTAssertEqual(SquareAttack.windowSide(fraction: 0.05, height: 28, width: 28, norm: .l2), 7)  // round(6.26) = 6, made odd
        for s in [1, 3, 5, 8] {
            let eta = SquareAttack.metaPerturbation(side: s)
            let norm = eta.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertEqual(norm, 1, accuracy: 1e-5, "η(\(s)) has unit norm")  // float32 entries
            XCTAssertTrue(eta.prefix(s * (s / 2)).allSatisfy { $0 > 0 }, "η(\(s)): upper rows positive")
            XCTAssertTrue(eta.suffix(s * (s - s / 2)).allSatisfy { $0 < 0 }, "η(\(s)): lower rows negative")
        }
    }

    func testSettingsNamesAndValidation() {
        XCTAssertEqual(SquareAttack().name, "square")
        XCTAssertEqual(SquareAttack(norm: .l2).name, "square-l2")
        XCTAssertEqual(HopSkipJump().name, "hsja")
        XCTAssertEqual(HopSkipJump(norm: .linf).name, "hsja-linf")
        XCTAssertEqual(SquareAttack().settings["queries"], .int(5000))
        XCTAssertEqual(SquareAttack().settings["p_init"], .float(0.8))
        XCTAssertEqual(HopSkipJump().settings["initial_evaluations"], .int(100))
        XCTAssertThrowsError(try SquareAttack(queries: 1).validate())
        XCTAssertThrowsError(try SquareAttack(epsilon: -1).validate())
        XCTAssertThrowsError(try SquareAttack(pInit: 0).validate())
        XCTAssertThrowsError(try HopSkipJump(iterations: 0).validate())
        XCTAssertThrowsError(try HopSkipJump(initialEvaluations: 100, maxEvaluations: 10).validate())
    }
}
