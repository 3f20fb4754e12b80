import AdvKit
import AdvKitTestSupport
import XCTest

/// APGD with the DLR losses (APGD-DLR, APGD-T) and the AutoAttack ensemble: the DLR loss and its gradient against a
/// plain Swift reference and finite differences, and the attacks by their properties on the reference CNN trained
/// in the test.
final class AutoAttackTests: XCTestCase {
    private static var cached: (Model, Dataset)?

    private func setup(_ n: Int) throws -> (Model, Dataset) {
        if Self.cached == nil {
            let (model, test) = try trainedReferenceCNN()
            Self.cached = (model, test)
        }
        return (Self.cached!.0, Self.cached!.1.prefix(n))
    }

    // MARK: the DLR loss

    /// DLR and targeted DLR in Double, straight from the definitions (π by a full sort).
    private func referenceDLR(_ z: [Double], label y: Int, target: Int?) -> Double {
        let sorted = z.sorted(by: >)
        if let t = target {
            let denominator = z.count >= 4 ? sorted[0] - (sorted[2] + sorted[3]) / 2 + 1e-12 : 1
            return -(z[y] - z[t]) / denominator
        }
        let other = z.indices.filter { $0 != y }.map { z[$0] }.max()!
        let denominator = z.count >= 3 ? sorted[0] - sorted[2] + 1e-12 : 1
        return -(z[y] - other) / denominator
    }

    func testDLRValueAndGradientMatchTheDefinitionAndFiniteDifferences() {
        for k in [2, 3, 4, 10] {
            let n = 6
            let logits = randomTensor([n, k], seed: UInt64(k), lo: -3, hi: 3)
            // Rows 0-2 with the label on top (the usual case), the rest with a wrong class on top.
            let top = logits.argmaxRows()
            let labels = (0..<n).map { i in Int32(i < 3 ? top[i] : (top[i] + 1) % k) }
            let targets = (0..<n).map { i in Int32((Int(labels[i]) + 1 + i % max(k - 1, 1)) % k) }
            for targeted in [false, true] {
                let (values, gradient) = targeted ? DLR.targetedLoss(logits: logits, labels: labels, targets: targets)
                                                  : DLR.loss(logits: logits, labels: labels)
                XCTAssertEqual(gradient.shape, logits.shape)
                for i in 0..<n {
                    let z = logits.row(i).map(Double.init)
                    let t = targeted ? Int(targets[i]) : nil
                    let want = referenceDLR(z, label: Int(labels[i]), target: t)
                    // float32 logits, the ratio computed in double: a few ulps of the result.
                    XCTAssertEqual(Double(values[i]), want, accuracy: 1e-6 + 1e-5 * abs(want), "K \(k) row \(i) targeted \(targeted)")
                    // Central differences of the Double reference, eps 1e-3, away from a change in the ranking.
                    let eps = 1e-3
                    let row = gradient.row(i)
                    for j in 0..<k {
                        var plus = z, minus = z
                        plus[j] += eps
                        minus[j] -= eps
                        let order = z.indices.sorted { z[$0] > z[$1] }
                        guard order == plus.indices.sorted(by: { plus[$0] > plus[$1] }),
                              order == minus.indices.sorted(by: { minus[$0] > minus[$1] }) else { continue }
                        let numeric = (referenceDLR(plus, label: Int(labels[i]), target: t)
                                       - referenceDLR(minus, label: Int(labels[i]), target: t)) / (2 * eps)
                        // The ratio is smooth between ranking changes; central differences err by O(eps²·curvature).
                        XCTAssertEqual(Double(row[j]), numeric, accuracy: 1e-4 + 1e-3 * abs(numeric),
                                       "K \(k) row \(i) logit \(j) targeted \(targeted)")
                    }
                }
            }
        }
        // Scale and shift invariance: DLR(a·z + b) = DLR(z) for a > 0.
        let z = randomTensor([4, 10], seed: 3, lo: -2, hi: 2)
        let labels: [Int32] = [0, 3, 7, 9]
        let a = DLR.loss(logits: z, labels: labels).values, b = DLR.loss(logits: z * 7 + 3, labels: labels).values
        assertClose(a, b, atol: 1e-5, rtol: 1e-4, "DLR ignores the logits' scale and shift") // float32 rounding of 7z + 3
    }

    /// A smooth classifier (flatten → linear → sigmoid → linear, fixed random weights): no ReLU or max-pool kinks,
    /// so finite differences of the loss are exact up to rounding; logits spread over several units.
    private final class SmoothClassifier: Classifier {
        let w1 = randomTensor([16, 36], seed: 21, lo: -1, hi: 1), w2 = randomTensor([10, 16], seed: 22, lo: -3, hi: 3)
        var classCount: Int { 10 }
        var inputShape: Shape { [1, 6, 6] }
        func callAsFunction(_ x: Variable) -> Variable {
            let t = x.tape
            let h = t.sigmoid(t.linear(t.flatten(x), weight: t.input(w1), bias: nil))
            return t.linear(h, weight: t.input(w2), bias: nil)
        }
    }

    /// The input gradient LogitLoss takes through the tape (seeded with DLR's dL/dz): directional derivatives
    /// against central differences of the loss itself.
    func testLogitLossInputGradientMatchesFiniteDifferences() {
        let model = SmoothClassifier()
        let x = randomTensor([3, 1, 6, 6], seed: 5, lo: 0, hi: 1)
        let labels: [Int32] = [1, 4, 9]
        let targets: [Int32] = [2, 0, 5]
        for targeted in [false, true] {
            let loss: (Tensor) -> (values: [Float], gradient: Tensor) = { z in
                targeted ? DLR.targetedLoss(logits: z, labels: labels, targets: targets) : DLR.loss(logits: z, labels: labels)
            }
            let e = LogitLoss().evaluate(model, x, of: loss)
            XCTAssertEqual(e.losses.scalars, loss(model.logits(of: x)).values, "the losses at the point")
            let z = model.logits(of: x)
            var checked = 0
            for direction in 0..<4 {
                let v = randomTensor(x.shape, seed: 10 + UInt64(direction))
                let h: Float = 1e-3
                // Skip a direction along which the logits' ranking changes (DLR's kinks).
                let ranking = { (t: Tensor) in (0..<3).map { i in t.row(i).indices.sorted { t.row(i)[$0] > t.row(i)[$1] } } }
                guard ranking(model.logits(of: x + v * h)) == ranking(z), ranking(model.logits(of: x - v * h)) == ranking(z) else { continue }
                func total(_ p: Tensor) -> Double { loss(model.logits(of: p)).values.reduce(0) { $0 + Double($1) } }
                let numeric = (total(x + v * h) - total(x - v * h)) / (2 * Double(h))
                let analytic = zip(e.gradient.scalars, v.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                // float32 forward passes differenced at h = 1e-3: ~1e-7·|L|/h of rounding on O(1) losses, plus O(h²).
                XCTAssertEqual(analytic, numeric, accuracy: 2e-3 + 1e-2 * abs(numeric), "direction \(direction) targeted \(targeted)")
                checked += 1
            }
            XCTAssertGreaterThanOrEqual(checked, 2, "directions away from a ranking change")
        }
    }

    // MARK: attacks

    private func assertInsideBall(_ r: AttackResult, _ clean: Tensor, norm: Norm, epsilon: Float,
                                  file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertGreaterThanOrEqual(r.adversarial.min(), 0, "\(r.attack): below the pixel bounds", file: file, line: line)
        XCTAssertLessThanOrEqual(r.adversarial.max(), 1, "\(r.attack): above the pixel bounds", file: file, line: line)
        for (i, o) in r.outcomes.enumerated() {
            let size = norm == .linf ? o.linf : o.l2
            // float32 projection: the radius to a relative 1e-6.
            XCTAssertLessThanOrEqual(size, epsilon + 1e-6 * max(1, epsilon), "\(r.attack) image \(i): \(norm) \(size) > \(epsilon)",
                                     file: file, line: line)
        }
    }

    func testAttacksStayInsideTheBallAndThePixelBoundsInLinfAndL2() throws {
        let (model, d) = try setup(32)
        for (norm, epsilon) in [(Norm.linf, Float(0.1)), (.l2, 1.5)] {
            let attacks: [Attack] = [
                APGD(epsilon: epsilon, steps: 10, norm: norm, loss: .dlr),
                APGD.targeted(epsilon: epsilon, steps: 10, norm: norm, targetClasses: 3),
                APGD(epsilon: epsilon, steps: 10, norm: norm, loss: .crossEntropy, restarts: 2),
                AutoAttack.standard(epsilon: epsilon, norm: norm, steps: 10, targetClasses: 3, squareQueries: 200),
            ]
            for a in attacks {
                let r = try a.run(model, images: d.images, labels: d.labels, seed: 1)
                assertInsideBall(r, d.images, norm: norm, epsilon: epsilon)
                XCTAssertLessThan(r.robustAccuracy, r.cleanAccuracy, "\(a.name) \(norm) hurts the model")
            }
        }
    }

    func testAPGDTReachesTargetedGoals() throws {
        let (model, d) = try setup(24)
        let target = 8  // "Bag"
        let r = try APGD.targeted(epsilon: 0.3, steps: 30).run(model, images: d.images, labels: d.labels, goal: .targeted(target))
        XCTAssertTrue(r.outcomes.allSatisfy { $0.target == target })
        for o in r.outcomes where o.success { XCTAssertEqual(o.adversarialPrediction, target, "a success is the target") }
        XCTAssertGreaterThanOrEqual(r.successRate, 0.8, "APGD-T reaches the target on most images at eps 0.3")
        // Per-image targets and a margin: success means the target beats every other logit by the margin.
        let targets = d.labels.map { Int32((Int($0) + 3) % 10) }
        let m = try APGD(epsilon: 0.3, steps: 30, loss: .dlr).run(model, images: d.images, labels: d.labels,
                                                                 goal: .targets(targets, margin: 1))
        let z = model.logits(of: m.adversarial)
        for (i, o) in m.outcomes.enumerated() where o.success {
            let row = z.row(i), t = Int(targets[i])
            XCTAssertGreaterThanOrEqual(row[t] - row.enumerated().filter { $0.offset != t }.map(\.element).max()!, 1 - 1e-4)
        }
        XCTAssertGreaterThanOrEqual(m.successRate, 0.5)
    }

    /// APGD-T without a target sweeps the runner-up classes: more target classes never leave more images standing
    /// (the first run is the same; later runs only add broken images). 20 asks for more than the 9 wrong classes: capped.
    func testAPGDTSweepOfTargetClassesOnlyAddsBrokenImages() throws {
        let (model, d) = try setup(48)
        let one = try APGD.targeted(epsilon: 0.05, steps: 20, targetClasses: 1).run(model, images: d.images, labels: d.labels, seed: 2)
        let many = try APGD.targeted(epsilon: 0.05, steps: 20, targetClasses: 20).run(model, images: d.images, labels: d.labels, seed: 2)
        for (i, (a, b)) in zip(one.outcomes, many.outcomes).enumerated() where a.success {
            XCTAssertTrue(b.success, "image \(i): broken with 1 target, standing with all 9")
        }
        XCTAssertLessThanOrEqual(many.robustAccuracy, one.robustAccuracy)
    }

    func testEnsembleIsNeverAboveItsComponents() throws {
        let (model, d) = try setup(96)
        let eps: Float = 0.05
        let components: [Attack] = [APGD(epsilon: eps, steps: 20), APGD.targeted(epsilon: eps, steps: 20, targetClasses: 3),
                                    APGD(epsilon: eps, steps: 20, loss: .dlr)]
        let ensemble = AutoAttack(components: components, epsilon: eps)
        let report = try ensemble.runWithReport(model, images: d.images, labels: d.labels, seed: 3, batchSize: 40)
        let alone = try components.map { try $0.run(model, images: d.images, labels: d.labels, seed: 3, batchSize: 40) }
        for (c, r) in zip(components, alone) {
            XCTAssertLessThanOrEqual(report.result.robustAccuracy, r.robustAccuracy, "the ensemble is above \(c.name)")
            // Image by image: APGD's draws are keyed by image, so an image the component breaks alone is broken.
            for (i, o) in r.outcomes.enumerated() where o.adversarialPrediction != o.label {
                XCTAssertNotEqual(report.result.outcomes[i].adversarialPrediction, report.result.outcomes[i].label,
                                  "image \(i): \(c.name) alone breaks it, the ensemble does not")
            }
        }
        // The first component sees every image: the robust accuracy after it is its own.
        XCTAssertEqual(report.robustAccuracy(afterComponents: 1), alone[0].robustAccuracy, accuracy: 1e-12)
        XCTAssertEqual(report.robustAccuracy(afterComponents: 0), report.result.cleanAccuracy, accuracy: 1e-12)
        XCTAssertEqual(report.robustAccuracy(afterComponents: 3), report.result.robustAccuracy, accuracy: 1e-12)
        // The record: each broken image names one component, and that image is wrong; the counts add up.
        XCTAssertEqual(report.brokenBy.count, d.count)
        for (i, name) in report.brokenBy.enumerated() {
            let o = report.result.outcomes[i]
            if let name {
                XCTAssertTrue(components.map(\.name).contains(name))
                XCTAssertEqual(o.cleanPrediction, o.label, "image \(i): a broken image was right on the clean image")
                XCTAssertNotEqual(o.adversarialPrediction, o.label, "image \(i): broken by \(name) but still right")
            } else {
                XCTAssertFalse(o.success, "image \(i): a success with no component")
            }
        }
        let correct = report.result.outcomes.filter { $0.cleanPrediction == $0.label }.count
        let robust = report.result.outcomes.filter { $0.adversarialPrediction == $0.label }.count
        XCTAssertEqual(report.brokenCounts.reduce(0, +), correct - robust)
        XCTAssertEqual(report.componentSeconds.count, 3)
        // Images no component broke get the clean image back.
        for (i, name) in report.brokenBy.enumerated() where name == nil {
            XCTAssertEqual(report.result.outcomes[i].linf, 0, "image \(i)")
        }
        // `run` gives the same images as the report.
        let plain = try ensemble.run(model, images: d.images, labels: d.labels, seed: 3, batchSize: 40)
        XCTAssertEqual(plain.adversarial, report.result.adversarial)
    }

    func testRandVersionRunsOnANoisyClassifier() throws {
        let (model, d) = try setup(16)
        let noisy = NoisyClassifier(model, sigma: 0.05, seed: 1)
        let rand = AutoAttack.rand(epsilon: 0.1, steps: 5, eotDraws: 4)
        XCTAssertEqual(rand.components.map(\.name), ["apgd-ce", "apgd-dlr"])
        XCTAssertEqual(rand.settings["apgd-ce.eot_draws"], .int(4))
        let report = try rand.runWithReport(noisy, images: d.images, labels: d.labels, seed: 1)
        assertInsideBall(report.result, d.images, norm: .linf, epsilon: 0.1)
        XCTAssertEqual(report.brokenBy.count, 16)
        XCTAssertGreaterThan(report.brokenCounts.reduce(0, +), 0, "EOT APGD breaks some images of a lightly noised model")
        XCTAssertEqual(AutoAttack.rand().components.compactMap { ($0 as? APGD)?.eotDraws }, [20, 20], "AutoAttack's 20 draws")
    }

    func testNamesSettingsAndBadArguments() {
        XCTAssertEqual(APGD().name, "apgd-ce")
        XCTAssertEqual(APGD(loss: .dlr).name, "apgd-dlr")
        XCTAssertEqual(APGD.targeted().name, "apgd-t")
        XCTAssertEqual(APGD.targeted().settings["target_classes"], .int(9))
        XCTAssertEqual(APGD(loss: .dlr).settings["loss"], .string("dlr"))
        XCTAssertEqual(APGD().settings["steps"], .int(100), "the paper's 100 steps")
        let standard = AutoAttack.standard(epsilon: 0.1)
        XCTAssertEqual(standard.components.map(\.name), ["apgd-ce", "apgd-t", "fab-t", "square"])
        XCTAssertEqual(standard.settings["version"], .string("standard"))
        XCTAssertEqual(standard.settings["apgd-t.steps"], .int(100))
        func expect(_ a: Attack, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try a.validate(), line: line) { XCTAssertTrue("\($0)".contains(text), "\($0)", line: line) }
        }
        expect(APGD(epsilon: -1, loss: .dlr), "epsilon")
        expect(APGD.targeted(targetClasses: 0), "target classes must be >= 1")
        expect(APGD(eotDraws: 0), "EOT draws must be >= 1")
        expect(AutoAttack(components: []), "at least one component")
        expect(AutoAttack(components: [APGD(steps: 0)]), "steps must be >= 1")
    }
}
