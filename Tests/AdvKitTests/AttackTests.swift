import AdvKit
import AdvKitTestSupport
import XCTest

/// Attacks tested by their properties and by their effect on a reference CNN trained here, in the test (seconds,
/// so these run in any clone), on Fashion-MNIST test images; and cross-checked against PyTorch on the
/// PyTorch-trained weights (../shared/peers/models/fmnist_cnn.safetensors), the one part that needs ../shared.
final class AttackTests: XCTestCase {
    private static var cached: (Model, Dataset)?
    private static var peer: Model?

    /// A reference CNN trained in the test (seed 0, 1 epoch on 12,000 training images: ~80% test accuracy) and
    /// the first `n` test images.
    private func setup(_ n: Int) throws -> (Model, Dataset) {
        if Self.cached == nil {
            let (model, test) = try trainedReferenceCNN()
            XCTAssertGreaterThan(model.accuracy(test.images, labels: test.labels), 0.7, "the model trained in the test learned")
            Self.cached = (model, test)
        }
        return (Self.cached!.0, Self.cached!.1.prefix(n))
    }

    /// The PyTorch-trained weights from ../shared, for the cross-checks against PyTorch.
    private func peerModel() throws -> Model {
        if let m = Self.peer { return m }
        guard FileManager.default.fileExists(atPath: RepositoryPaths.peerModel) else {
            throw XCTSkip("\(RepositoryPaths.peerModel) is not beside the repository (only the PyTorch cross-check needs it)")
        }
        let model = Model(.cnn)
        try model.load(from: RepositoryPaths.peerModel)
        Self.peer = model
        return model
    }

    private func assertInsideBall(_ r: AttackResult, _ clean: Tensor, norm: Norm, epsilon: Float,
                                  file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertGreaterThanOrEqual(r.adversarial.min(), 0, "\(r.attack): below the pixel bounds", file: file, line: line)
        XCTAssertLessThanOrEqual(r.adversarial.max(), 1, "\(r.attack): above the pixel bounds", file: file, line: line)
        for (i, o) in r.outcomes.enumerated() {
            let size = norm == .linf ? o.linf : o.l2
            XCTAssertLessThanOrEqual(size, epsilon + 1e-6 * max(1, epsilon), "\(r.attack) image \(i): \(norm) \(size) > \(epsilon)", file: file, line: line)
        }
    }

    func testBallAttacksStayInsideTheBallAndThePixelBounds() throws {
        let (model, d) = try setup(32)
        let linf: [Attack] = [FGSM(epsilon: 0.1), RFGSM(epsilon: 0.1), BIM(epsilon: 0.1, steps: 5),
                              BIM.momentum(epsilon: 0.1, steps: 5), PGD(epsilon: 0.1, steps: 5, restarts: 2, earlyStop: true),
                              APGD(epsilon: 0.1, steps: 10)]
        for a in linf {
            let r = try a.run(model, images: d.images, labels: d.labels, seed: 1)
            assertInsideBall(r, d.images, norm: .linf, epsilon: 0.1)
            XCTAssertLessThan(r.robustAccuracy, r.cleanAccuracy, "\(a.name) hurts the model")
        }
        for a: Attack in [PGD(epsilon: 1, steps: 5, norm: .l2), APGD(epsilon: 1, steps: 10, norm: .l2)] {
            assertInsideBall(try a.run(model, images: d.images, labels: d.labels, seed: 1), d.images, norm: .l2, epsilon: 1)
        }
    }

    func testFGSMMatchesPyTorchOnTheTrainedModel() throws {
        let model = try peerModel()
        let d = try setup(256).1
        let r = try FGSM(epsilon: 0.1).run(model, images: d.images, labels: d.labels)
        // PyTorch, torchattacks, ART and foolbox: every image's adversarial class in bench_t2.json.
        let results = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: RepositoryPaths.peerResults))) as! [String: Any]
        let want = ((results["workloads"] as! [String: Any])["fgsm/torch"] as! [String: Any])["adv_pred"] as! String
        let got = r.outcomes.map { String($0.adversarialPrediction) }.joined()
        let agree = zip(got, want.prefix(256)).filter { $0 == $1 }.count
        XCTAssertGreaterThanOrEqual(agree, 254, "FGSM's adversarial class agrees with PyTorch's on \(agree) of 256 images")
        XCTAssertEqual(r.outcomes[0].linf, 0.1, accuracy: 1e-6)
    }

    func testEveryAttackHonoursATargetedGoal() throws {
        let (model, d) = try setup(24)
        let target = 8  // "Bag"
        let attacks: [Attack] = [FGSM(epsilon: 0.3), BIM(epsilon: 0.3, alpha: 0.03, steps: 20), BIM.momentum(epsilon: 0.3, steps: 20),
                                 RFGSM(epsilon: 0.3), PGD(epsilon: 0.3, alpha: 0.03, steps: 20), APGD(epsilon: 0.3, steps: 20),
                                 JSMA(gamma: 0.2), DeepFool(steps: 30), CarliniWagnerL2(binarySearchSteps: 2, steps: 30)]
        for a in attacks {
            let untargeted = try a.run(model, images: d.images, labels: d.labels)
            let targeted = try a.run(model, images: d.images, labels: d.labels, goal: .targeted(target))
            let hitsT = targeted.outcomes.filter { $0.adversarialPrediction == target }.count
            let hitsU = untargeted.outcomes.filter { $0.adversarialPrediction == target }.count
            XCTAssertTrue(targeted.outcomes.allSatisfy { $0.target == target }, a.name)
            XCTAssertGreaterThan(hitsT, hitsU, "\(a.name): the targeted run must aim at class \(target) (\(hitsT) vs \(hitsU) untargeted)")
            for o in targeted.outcomes where o.success { XCTAssertEqual(o.adversarialPrediction, target, "\(a.name): a success is the target") }
            if !(a is FGSM || a is RFGSM) {
                XCTAssertGreaterThanOrEqual(targeted.successRate, 0.5, "\(a.name) reaches the target on most images")
            }
        }
    }

    func testLeastLikelyAndMarginGoals() throws {
        let (model, d) = try setup(16)
        let clean = model.logits(of: d.images)
        let leastLikely = clean.map { -$0 }.argmaxRows()
        let r = try PGD(epsilon: 0.3, alpha: 0.03, steps: 20).run(model, images: d.images, labels: d.labels, goal: .leastLikely())
        XCTAssertEqual(r.outcomes.map { $0.target! }, leastLikely)
        // With a margin, success means the target logit beats every other by the margin.
        let m = try CarliniWagnerL2(binarySearchSteps: 3, steps: 50).run(model, images: d.images, labels: d.labels, goal: .targeted(3, margin: 2))
        let z = model.logits(of: m.adversarial)
        for (i, o) in m.outcomes.enumerated() where o.success {
            let row = z.row(i)
            let other = row.enumerated().filter { $0.offset != 3 }.map(\.element).max()!
            XCTAssertGreaterThanOrEqual(row[3] - other, 2 - 1e-4)
        }
        XCTAssertGreaterThan(m.successRate, 0.5)
    }

    func testJSMAChangesAtMostGammaOfThePixels() throws {
        let (model, d) = try setup(16)
        let r = try JSMA(theta: 1, gamma: 0.05).run(model, images: d.images, labels: d.labels)
        for o in r.outcomes { XCTAssertLessThanOrEqual(o.l0, 0.05 * 784) }
        XCTAssertGreaterThan(r.successRate, 0.2)
    }

    func testDeepFoolIsSmallerThanFGSMAndCWSmallerThanPGDL2() throws {
        let (model, d) = try setup(32)
        let fgsm = try FGSM(epsilon: 0.1).run(model, images: d.images, labels: d.labels)
        let deepfool = try DeepFool().run(model, images: d.images, labels: d.labels)
        XCTAssertGreaterThanOrEqual(deepfool.successRate, 0.99)
        var pairs = 0
        for (a, b) in zip(deepfool.outcomes, fgsm.outcomes) where a.success && b.success {
            XCTAssertLessThan(a.l2, b.l2, "DeepFool needs less than FGSM where both succeed")
            pairs += 1
        }
        XCTAssertGreaterThan(pairs, 10)
        let cw = try CarliniWagnerL2(binarySearchSteps: 4, steps: 60).run(model, images: d.images, labels: d.labels)
        let pgd = try PGD(epsilon: 2, steps: 20, norm: .l2).run(model, images: d.images, labels: d.labels)
        XCTAssertGreaterThanOrEqual(cw.successRate, 0.95)
        let both = zip(cw.outcomes, pgd.outcomes).filter { $0.0.success && $0.1.success }
        XCTAssertGreaterThan(both.count, 10)
        XCTAssertLessThan(median(both.map { Double($0.0.l2) })!, median(both.map { Double($0.1.l2) })!, "C&W finds smaller L2 than PGD-L2")
    }

    func testSameSeedSameImagesAtAnyBatchSizeAndThreadCount() throws {
        let (model, d) = try setup(12)
        let pgd = PGD(epsilon: 0.1, steps: 3)
        let saved = Parallelism.threads
        defer { Parallelism.threads = saved }
        Parallelism.threads = 1
        let a = try pgd.run(model, images: d.images, labels: d.labels, seed: 5, batchSize: 12)
        Parallelism.threads = 2
        let b = try pgd.run(model, images: d.images, labels: d.labels, seed: 5, batchSize: 5)
        XCTAssertEqual(a.adversarial.scalars.count, b.adversarial.scalars.count)
        // The random starts are identical; float sums in the GEMMs may round differently across thread counts,
        // which can flip the sign of a near-zero gradient, so compare the outcome and almost every pixel.
        let same = zip(a.adversarial.scalars, b.adversarial.scalars).filter { abs($0 - $1) < 1e-6 }.count
        XCTAssertGreaterThan(Double(same) / Double(a.adversarial.count), 0.999)
        let c = try pgd.run(model, images: d.images, labels: d.labels, seed: 5, batchSize: 5)
        XCTAssertEqual(b.adversarial, c.adversarial, "same seed, batch size and threads: identical")
        let e = try pgd.run(model, images: d.images, labels: d.labels, seed: 6, batchSize: 5)
        XCTAssertNotEqual(e.adversarial, c.adversarial, "another seed, another start")
    }

    func testBadArgumentsGiveClearErrors() throws {
        let (model, d) = try setup(4)
        func expect(_ body: () throws -> Any, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { XCTAssertTrue("\($0)".contains(text), "\($0)", line: line) }
        }
        expect({ try FGSM(epsilon: -0.1).run(model, images: d.images, labels: d.labels) }, "epsilon must be a finite number >= 0")
        expect({ try FGSM(epsilon: .nan).run(model, images: d.images, labels: d.labels) }, "epsilon")
        expect({ try PGD(steps: 0).run(model, images: d.images, labels: d.labels) }, "steps must be >= 1")
        expect({ try FGSM().run(model, images: d.images, labels: d.labels, goal: .targeted(10)) }, "target class 10 is outside [0, 10)")
        expect({ try FGSM().run(model, images: d.images, labels: [0, 1, 2, 99]) }, "label 3 is 99")
        var nan = d.images
        nan[0, 0, 3, 3] = .nan
        expect({ try FGSM().run(model, images: nan, labels: d.labels) }, "NaN")
        expect({ try FGSM().run(model, images: d.images * 2, labels: d.labels) }, "outside [0.0, 1.0]")
        expect({ try FGSM().run(model, images: Tensor(zeros: [4, 1, 14, 14]), labels: d.labels) }, "the model takes images of shape")
        expect({ try JSMA(gamma: 0).run(model, images: d.images, labels: d.labels) }, "gamma must be in (0, 1]")
    }

    func testL2FastGradientAndL2BIMStepAlongTheNormalisedGradient() throws {
        let (model, d) = try setup(32)
        for a: Attack in [FGSM(epsilon: 1, norm: .l2), BIM(epsilon: 1, norm: .l2)] {
            let r = try a.run(model, images: d.images, labels: d.labels)
            assertInsideBall(r, d.images, norm: .l2, epsilon: 1)
            // An L2 step of radius 1 moves single pixels far less than 1 (an L-inf step of 1 would destroy the image).
            let linf = median(r.outcomes.map { Double($0.linf) })!
            XCTAssertLessThan(linf, 0.6, "\(a.name): median L-inf \(linf) shows an L2 step, not an L-inf one")
            XCTAssertLessThan(r.robustAccuracy, r.cleanAccuracy, "\(a.name) hurts the model")
        }
        // FGM's step has length ε before clipping: where no pixel is clipped, ‖δ‖₂ = ε exactly.
        let fgm = try FGSM(epsilon: 0.5, norm: .l2).run(model, images: d.images, labels: d.labels)
        XCTAssertTrue(fgm.outcomes.contains { abs($0.l2 - 0.5) < 1e-4 } || fgm.outcomes.allSatisfy { $0.l2 <= 0.5 + 1e-5 })
        XCTAssertEqual(FGSM(norm: .l2).name, "fgm-l2")
        XCTAssertEqual(BIM(epsilon: 1, norm: .l2).steps, 10)
        XCTAssertThrowsError(try BIM(epsilon: 1, momentum: 1, norm: .l2).validate()) { XCTAssertTrue("\($0)".contains("L-inf")) }
    }

    func testEveryAttackRecordsItsEffectiveSettings() {
        XCTAssertEqual(PGD().settings["steps"], .int(40))
        XCTAssertEqual(PGD(epsilon: 0.1).settings["alpha"], .float(2.5 * 0.1 / 40))
        XCTAssertEqual(BIM(epsilon: 0.1).settings["steps"], .int(30), "Kurakin's rule at eps 0.1")
        let attacks: [Attack] = [FGSM(), RFGSM(), BIM(), BIM.momentum(), PGD(), APGD(), JSMA(), DeepFool(), CarliniWagnerL2()]
        for a in attacks {
            XCTAssertFalse(a.settings.isEmpty, a.name)
            if !(a is JSMA) { XCTAssertNotNil(a.settings["norm"], "\(a.name) records its norm") }
        }
    }

    /// An attack written as a user would, outside the module, from the public toolkit alone: a targeted L2 PGD
    /// with a random start that keeps each image's worst case.
    private struct UserL2Attack: Attack {
        var epsilon: Float = 2
        var name: String { "user-l2" }
        var settings: [String: SettingValue] { ["epsilon": .float(epsilon), "norm": .string("l2")] }
        func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
            let loss = AttackLoss()
            var worst = WorstCase(batch.images)
            var x = Norm.l2.randomStart(batch, epsilon: epsilon, stream: 7)
            for _ in 0..<20 {
                let e = loss.evaluate(model, x, batch)
                worst.offer(x, losses: batch.ascending(e.losses), reached: batch.reached(e.logits))
                Norm.l2.step(&x, gradient: e.gradient, origin: batch.images, alpha: epsilon / 8, epsilon: epsilon, bounds: batch.bounds)
            }
            let e = loss.evaluate(model, x, batch)
            worst.offer(x, losses: batch.ascending(e.losses), reached: batch.reached(e.logits))
            return worst.images
        }
    }

    func testAnAttackBuiltFromThePublicToolkitWorks() throws {
        let (model, d) = try setup(16)
        let r = try UserL2Attack().run(model, images: d.images, labels: d.labels, goal: .targeted(8))
        assertInsideBall(r, d.images, norm: .l2, epsilon: 2)
        XCTAssertGreaterThan(r.successRate, 0.5, "the toolkit's pieces make a working targeted attack")
        // The goal test the attack used is the one the outcomes use: every success is a reached goal.
        let batch = AttackBatch(images: r.adversarial, labels: d.labels, targets: [Int32](repeating: 8, count: 16), goal: .targeted(8))
        let reached = batch.reached(model.logits(of: r.adversarial))
        for (i, o) in r.outcomes.enumerated() where o.cleanPrediction == o.label && o.label != 8 { XCTAssertEqual(o.success, reached[i]) }
        // Per-image norms against a direct sum.
        let delta = r.adversarial - d.images
        let n = perImageNorms(delta)
        let row = Array(delta.scalars[0..<784])
        XCTAssertEqual(Double(n.l2[0]), row.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot(), accuracy: 1e-5)
        XCTAssertEqual(Double(n.l1[0]), row.reduce(0.0) { $0 + Double(abs($1)) }, accuracy: 1e-4)
    }

    func testWorstCaseKeepsReachedThenHighestLoss() {
        var w = WorstCase(Tensor(zeros: [3, 1, 1, 1]))
        w.offer(Tensor([1, 1, 1], shape: [3, 1, 1, 1]), losses: [1, 1, 1], reached: [false, true, false])
        w.offer(Tensor([2, 2, 2], shape: [3, 1, 1, 1]), losses: [2, 5, 0.5], reached: [false, false, false])
        XCTAssertEqual(w.images.scalars, [2, 1, 1], "higher loss replaces; a reached goal is kept; a lower loss is not taken")
        XCTAssertEqual(w.reached, [false, true, false])
    }

    func testSaliencyMaps() throws {
        let (model, d) = try setup(4)
        let classes = d.labels.map(Int.init)
        let s = Saliency.gradient(model, images: d.images, classes: classes)
        XCTAssertEqual(s.shape, [4, 1, 28, 28])
        XCTAssertGreaterThanOrEqual(s.min(), 0)
        XCTAssertGreaterThan(s.max(), 0)
        // The map is the class logit's gradient: a small step along it raises that logit.
        let tape = Tape()
        let x = tape.input(d.images)
        var seed = Tensor(zeros: [4, 10])
        for (i, c) in classes.enumerated() { seed[i, c] = 1 }
        let g = tape.gradient(of: model(x), seed: seed, wrt: x)
        let before = model.logits(of: d.images), after = model.logits(of: d.images + g * 0.01)
        for (i, c) in classes.enumerated() { XCTAssertGreaterThan(after[i, c], before[i, c]) }
        let gx = Saliency.gradientTimesInput(model, images: d.images, classes: classes)
        assertClose(gx.scalars, (g * d.images).scalars, atol: 1e-7, rtol: 1e-6, "gradient x input")
    }
}
