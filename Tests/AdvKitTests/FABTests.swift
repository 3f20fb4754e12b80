@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// FAB and FAB-T (Croce & Hein 2020): the hyperplane ∩ box projections against closed forms and random feasible
/// points, and the attack by its properties on the reference CNN trained in the test.
final class FABTests: XCTestCase {
    private func setup(_ n: Int) throws -> (Model, Dataset) {
        let (model, test) = try trainedReferenceCNN()
        return (model, test.prefix(n))
    }

    private func size(_ a: [Float], _ b: [Float], _ norm: Norm) -> Double {
        var s = 0.0
        for (x, y) in zip(a, b) {
            let e = Double(x) - Double(y)
            s = norm == .linf ? max(s, abs(e)) : s + e * e
        }
        return norm == .linf ? s : s.squareRoot()
    }

    private func dot(_ w: [Float], _ x: [Float]) -> Double { zip(w, x).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

    // MARK: projections

    func testHyperplaneProjectionMatchesTheClosedFormWhenTheBoxIsInactive() {
        // A point in the middle of the box and a small move: no coordinate reaches a bound, so the projection is
        // the unconstrained one: L2 p + c·w/‖w‖², L∞ p + c·sign(w)/‖w‖₁ (c = b − w·p).
        for trial in 0..<20 {
            let d = 1 + trial % 7
            let w = randomArray(d, seed: UInt64(100 + trial))
            let p = randomArray(d, seed: UInt64(200 + trial), lo: 0.4, hi: 0.6)
            let l1 = w.reduce(0.0) { $0 + abs(Double($1)) }, l2sq = w.reduce(0.0) { $0 + Double($1) * Double($1) }
            // |c| ≤ 0.05·‖w‖₂ moves no coordinate by more than 0.05 in either norm's solution.
            let c = 0.05 * l2sq.squareRoot() * Double(randomArray(1, seed: UInt64(300 + trial))[0])
            let b = Float(dot(w, p) + c)
            let got2 = FAB.projection(of: p, ontoHyperplane: w, offset: b, norm: .l2)
            let gotInf = FAB.projection(of: p, ontoHyperplane: w, offset: b, norm: .linf)
            let cf = Double(b) - dot(w, p)  // the offset as rounded to Float
            assertClose(got2, (0..<d).map { Double(p[$0]) + cf * Double(w[$0]) / l2sq }, atol: 1e-6, rtol: 1e-5,
                        "L2, d = \(d)")  // float32 inputs, double solve
            assertClose(gotInf, (0..<d).map { Double(p[$0]) + cf / l1 * (w[$0] > 0 ? 1 : -1) }, atol: 1e-6, rtol: 1e-5,
                        "L∞, d = \(d)")
        }
    }

    func testHyperplaneProjectionIsFeasibleAndNoRandomFeasiblePointIsCloser() {
        var rng = SeededGenerator(seed: 11, stream: 3)
        func uniform() -> Float { rng.nextUniform() }
        for norm in Norm.allCases {
            for trial in 0..<200 {
                let d = 1 + trial % 6
                var w = (0..<d).map { _ in 2 * uniform() - 1 }
                if d > 2 && trial % 5 == 0 { w[1] = 0 }  // a coordinate the hyperplane ignores
                let p = (0..<d).map { _ in trial % 3 == 0 ? (uniform() < 0.5 ? 0 : 1) : uniform() }  // some at the bounds
                let q = (0..<d).map { _ in uniform() }  // the hyperplane passes through a box point: feasible
                let b = Float(dot(w, q))
                let x = FAB.projection(of: p, ontoHyperplane: w, offset: b, norm: norm)
                let scale = w.reduce(0.0) { $0 + abs(Double($1)) }
                XCTAssertTrue(x.allSatisfy { $0 >= 0 && $0 <= 1 }, "\(norm) trial \(trial): outside the box \(x)")
                XCTAssertEqual(dot(w, x), Double(b), accuracy: 1e-5 * max(1, scale), "\(norm) trial \(trial): off the hyperplane")
                let best = size(x, p, norm)
                // Feasible points: where segments between box points on opposite sides cross the hyperplane, and
                // small moves from x along the hyperplane that stay in the box.
                var checked = 0
                for _ in 0..<400 {
                    let u = (0..<d).map { _ in uniform() }, v = (0..<d).map { _ in uniform() }
                    let fu = dot(w, u) - Double(b), fv = dot(w, v) - Double(b)
                    guard fu * fv < 0 else { continue }
                    let t = Float(fu / (fu - fv))
                    let z = (0..<d).map { u[$0] + t * (v[$0] - u[$0]) }
                    XCTAssertGreaterThanOrEqual(size(z, p, norm), best - 1e-5, "\(norm) trial \(trial): a feasible point is closer")
                    checked += 1
                }
                let wsq = w.reduce(0.0) { $0 + Double($1) * Double($1) }
                for _ in 0..<200 {
                    var r = (0..<d).map { _ in 0.02 * (2 * uniform() - 1) }
                    let along = dot(w, r) / wsq
                    for j in 0..<d { r[j] -= Float(along) * w[j] }
                    let z = (0..<d).map { x[$0] + r[$0] }
                    guard z.allSatisfy({ $0 >= 0 && $0 <= 1 }) else { continue }
                    XCTAssertGreaterThanOrEqual(size(z, p, norm), best - 1e-5, "\(norm) trial \(trial): a nearby feasible point is closer")
                    checked += 1
                }
                XCTAssertGreaterThan(checked, 0)
            }
        }
    }

    func testUnreachableHyperplaneGivesTheNearestCorner() {
        // w·x ≤ 1.5 on the box for w = (1, 0.5, −1, 0): the hyperplane w·x = 3 is out of reach; every coordinate
        // that matters moves to the bound that raises w·x, the one w ignores stays.
        let w: [Float] = [1, 0.5, -1, 0], p: [Float] = [0.2, 0.7, 0.4, 0.3]
        for norm in Norm.allCases {
            XCTAssertEqual(FAB.projection(of: p, ontoHyperplane: w, offset: 3, norm: norm), [1, 1, 0, 0.3], "\(norm)")
            XCTAssertEqual(FAB.projection(of: p, ontoHyperplane: w, offset: -3, norm: norm), [0, 0, 1, 0.3], "\(norm)")
        }
        // Already on the hyperplane: no move.
        XCTAssertEqual(FAB.projection(of: p, ontoHyperplane: w, offset: Float(dot(w, p)), norm: .l2), p)
    }

    func testStepKernelEqualsTheSwiftReferenceBitForBit() {
        // ck_fab_step (what `run` calls, images split over the threads) against FAB.referenceStep: the same double
        // sums in the same order and the same pivots, so equal to the last bit, not merely close. Batch 1, 3 and 7,
        // sizes 1 to 784, both norms, normals with zeros, reachable and unreachable hyperplanes, x₀ = x_k and not.
        var rng = SeededGenerator(seed: 14, stream: 3)
        func uniform(_ a: Float, _ b: Float) -> Float { a + (b - a) * Float(rng.next() >> 40) / Float(1 << 24) }
        var compared = 0
        for (trial, (n, d)) in [(1, 1), (3, 2), (3, 7), (7, 33), (1, 784), (3, 784), (7, 100)].enumerated() {
            for norm in Norm.allCases {
                let x0 = (0..<(n * d)).map { _ in uniform(0, 1) }
                let x1 = trial % 2 == 0 ? x0 : x0.map { min(max($0 + uniform(-0.2, 0.2), 0), 1) }
                let w = (0..<(n * d)).map { j in j % 5 == 3 ? 0 : uniform(-1, 1) }
                // Values from none to far past what the box can reach (d·1 bounds |w·δ|).
                let f = (0..<n).map { i in i % 3 == 0 ? 0 : uniform(-2, 2) * Float(max(d / (1 + i % 4), 1)) }
                let want = FAB.referenceStep(point: x1, origin: x0, normal: w, value: f, count: n, norm: norm,
                                             alphaMax: 0.1, eta: 1.05)
                let got = FAB.kernelStep(point: x1, origin: x0, normal: w, value: f, count: n, norm: norm,
                                         alphaMax: 0.1, eta: 1.05)
                XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "n \(n) d \(d) \(norm)")
                XCTAssertTrue(got.allSatisfy { $0 >= 0 && $0 <= 1 })
                compared += 1
            }
        }
        XCTAssertEqual(compared, 14)
    }

    // MARK: the attack

    func testNamesSettingsAndValidation() throws {
        XCTAssertEqual(FAB().name, "fab")
        XCTAssertEqual(FAB(targeted: true).name, "fab-t")
        XCTAssertEqual(FAB(norm: .l2).name, "fab-l2")
        XCTAssertEqual(FAB(norm: .l2, targeted: true).name, "fab-t-l2")
        let s = FAB(epsilon: 0.1, targeted: true).settings
        XCTAssertEqual(s["epsilon"], .float(0.1))
        XCTAssertEqual(s["steps"], .int(100))
        XCTAssertEqual(s["restarts"], .int(1))
        XCTAssertEqual(s["alpha_max"], .float(0.1))
        XCTAssertEqual(s["eta"], .float(1.05))
        XCTAssertEqual(s["beta"], .float(0.9))
        XCTAssertEqual(s["target_classes"], .int(9))
        XCTAssertEqual(s["restart_radius"], .float(0.1), "ε is the restart radius")
        XCTAssertEqual(s["targeted"], .bool(true))
        XCTAssertEqual(FAB().settings["epsilon"], .string("none"))
        XCTAssertEqual(FAB(norm: .l2).settings["restart_radius"], .float(1))
        for bad in [FAB(epsilon: -1), FAB(steps: 0), FAB(restarts: 0), FAB(alphaMax: 2), FAB(eta: 0.5), FAB(beta: 0),
                    FAB(targetClasses: 0), FAB(restartRadius: .nan)] {
            XCTAssertThrowsError(try bad.validate())
        }
    }

    private func assertInsideBall(_ r: AttackResult, norm: Norm, epsilon: Float, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertGreaterThanOrEqual(r.adversarial.min(), 0, "\(r.attack): below the pixel bounds", file: file, line: line)
        XCTAssertLessThanOrEqual(r.adversarial.max(), 1, "\(r.attack): above the pixel bounds", file: file, line: line)
        for (i, o) in r.outcomes.enumerated() {
            let size = norm == .linf ? o.linf : o.l2
            // The attack measures its norm in double from the same floats: a few ulps apart at most.
            XCTAssertLessThanOrEqual(size, epsilon * (1 + 1e-6), "\(r.attack) image \(i): \(norm) \(size) > \(epsilon)", file: file, line: line)
        }
    }

    func testWithEpsilonStaysInsideTheBallAndThePixelBounds() throws {
        let (model, d) = try setup(32)
        for (norm, eps) in [(Norm.linf, Float(0.1)), (.l2, 1)] {
            for targeted in [false, true] {
                let a = FAB(epsilon: eps, norm: norm, targeted: targeted, steps: 20, restarts: 2, targetClasses: 3)
                let r = try a.run(model, images: d.images, labels: d.labels, seed: 1)
                assertInsideBall(r, norm: norm, epsilon: eps)
                XCTAssertLessThan(r.robustAccuracy, r.cleanAccuracy - 0.3, "\(a.name) hurts the model")
                // An image whose adversarial would be larger than ε comes back clean.
                for (i, o) in r.outcomes.enumerated() where !o.success {
                    XCTAssertEqual(o.l2, 0, "\(a.name) image \(i): a failure returns the clean image")
                }
            }
        }
    }

    func testMinimalNormIsNoLargerThanPGDNeedsAndCloseToDeepFool() throws {
        let (model, d) = try setup(32)
        // L∞: the smallest radius on a grid at which PGD (20 steps, no random start) succeeds, per image.
        let fab = try FAB(steps: 100).run(model, images: d.images, labels: d.labels)
        XCTAssertGreaterThanOrEqual(fab.successRate, 0.99)
        let grid: [Float] = [0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.3]
        var needed = [Float](repeating: .infinity, count: d.count)
        for eps in grid {
            let r = try PGD(epsilon: eps, alpha: eps / 8, steps: 20, randomStart: false).run(model, images: d.images, labels: d.labels)
            for (i, o) in r.outcomes.enumerated() where o.success && needed[i] == .infinity { needed[i] = eps }
        }
        let pairs = zip(fab.outcomes, needed).filter { $0.0.success && $0.1 < .infinity }
        let within = pairs.filter { $0.0.linf <= $0.1 }.count
        XCTAssertGreaterThan(pairs.count, 20)
        XCTAssertGreaterThanOrEqual(Double(within), 0.9 * Double(pairs.count),
                                    "FAB's L∞ is within PGD's needed radius on \(within) of \(pairs.count) images")
        // L2: FAB's median is close to or below DeepFool's (DeepFool refined by bisection to the boundary).
        let fab2 = try FAB(norm: .l2, steps: 100).run(model, images: d.images, labels: d.labels)
        let deepfool = try DeepFool().run(model, images: d.images, labels: d.labels)
        XCTAssertGreaterThanOrEqual(fab2.successRate, 0.99)
        let both = zip(fab2.outcomes, deepfool.outcomes).filter { $0.0.success && $0.1.success }
        let mf = both.map { Double($0.0.l2) }.sorted()[both.count / 2], md = both.map { Double($0.1.l2) }.sorted()[both.count / 2]
        XCTAssertLessThanOrEqual(mf, 1.05 * md, "FAB-L2 median \(mf) vs DeepFool \(md)")
    }

    func testFABTSuccessesAreTheTopClasses() throws {
        let (model, d) = try setup(32)
        let clean = model.logits(of: d.images)
        // Two targets: the second and third highest clean logits.
        let r = try FAB(targeted: true, steps: 50, targetClasses: 2).run(model, images: d.images, labels: d.labels)
        XCTAssertGreaterThanOrEqual(r.successRate, 0.9)
        var onTop = 0, successes = 0
        for (i, o) in r.outcomes.enumerated() where o.success {
            let row = clean.row(i)
            let order = (0..<row.count).sorted { row[$0] > row[$1] }
            successes += 1
            if Array(order[1...2]).contains(o.adversarialPrediction) { onTop += 1 }
        }
        XCTAssertGreaterThanOrEqual(Double(onTop), 0.9 * Double(successes), "\(onTop) of \(successes) land on a target")
        // FAB-T with all targets is at least as small as FAB-T with two (each image keeps its smallest).
        let all = try FAB(targeted: true, steps: 50).run(model, images: d.images, labels: d.labels)
        for (a, b) in zip(all.outcomes, r.outcomes) where a.success && b.success {
            XCTAssertLessThanOrEqual(a.linf, b.linf * 1.0001 + 1e-6)
        }
    }

    func testTargetedGoalReachesItsTarget() throws {
        let (model, d) = try setup(24)
        let target = 8  // "Bag"
        let r = try FAB(steps: 100).run(model, images: d.images, labels: d.labels, goal: .targeted(target))
        XCTAssertGreaterThanOrEqual(r.successRate, 0.8)
        for o in r.outcomes where o.success { XCTAssertEqual(o.adversarialPrediction, target) }
        let m = try FAB(norm: .l2, steps: 100).run(model, images: d.images, labels: d.labels, goal: .targeted(3, margin: 1))
        let z = model.logits(of: m.adversarial)
        for (i, o) in m.outcomes.enumerated() where o.success {
            let row = z.row(i)
            XCTAssertGreaterThanOrEqual(row[3] - row.enumerated().filter { $0.offset != 3 }.map(\.element).max()!, 1 - 1e-4)
        }
        XCTAssertGreaterThan(m.successRate, 0.5)
    }

    func testSameSeedSameImagesAtAnyBatchSize() throws {
        let (model, d) = try setup(12)
        let fab = FAB(epsilon: 0.05, steps: 10, restarts: 2)
        let a = try fab.run(model, images: d.images, labels: d.labels, seed: 5, batchSize: 12)
        let b = try fab.run(model, images: d.images, labels: d.labels, seed: 5, batchSize: 5)
        XCTAssertEqual(a.outcomes.map(\.success), b.outcomes.map(\.success))
        let same = zip(a.adversarial.scalars, b.adversarial.scalars).filter { abs($0 - $1) < 1e-5 }.count
        XCTAssertGreaterThan(Double(same) / Double(a.adversarial.count), 0.99)
    }
}
