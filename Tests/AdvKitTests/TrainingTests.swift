import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

final class TrainingTests: XCTestCase {
    func testCNNLearnsTheSquaresTask() throws {
        let train = squaresDataset(count: 512, seed: 1), test = squaresDataset(count: 200, seed: 2)
        let model = Model(.cnn, inputShape: [1, 16, 16], classes: 4, seed: 0)
        let big = try Dataset(images: pad(train.images), labels: train.labels, classNames: train.classNames)
        let bigTest = try Dataset(images: pad(test.images), labels: test.labels, classNames: test.classNames)
        let before = model.accuracy(bigTest.images, labels: bigTest.labels)
        let history = try Trainer(model: model, configuration: testTrainingConfiguration(epochs: 3)).fit(big, test: bigTest)
        XCTAssertEqual(history.count, 3)
        XCTAssertLessThan(history.last!.trainLoss, history.first!.trainLoss, "the loss falls")
        XCTAssertGreaterThan(history.last!.testAccuracy!, 0.95, "learned (from \(before))")
    }

    func testSameSeedSameWeightsAndCheckpoint() throws {
        let train = squaresDataset(count: 256, seed: 3)
        let dir = temporaryDirectory()
        func run(_ seed: UInt64) throws -> Model {
            let m = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: seed)
            try Trainer(model: m, configuration: testTrainingConfiguration(epochs: 2, seed: seed)).fit(train, checkpoint: dir + "/ckpt-\(seed).safetensors")
            return m
        }
        let a = try run(7), b = try run(7)
        for (x, y) in zip(a.stateDict, b.stateDict) { XCTAssertEqual(x.tensor.value, y.tensor.value, "\(x.name) differs between runs") }
        let reloaded = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: 99)
        try reloaded.load(from: dir + "/ckpt-7.safetensors")
        XCTAssertEqual(reloaded.stateDict[0].tensor.value, a.stateDict[0].tensor.value, "the checkpoint holds the final weights")
        let c = try run(8)
        XCTAssertNotEqual(c.stateDict[0].tensor.value, a.stateDict[0].tensor.value, "another seed, other weights")
    }

    func testResumingGivesTheWeightsOfAnUninterruptedRun() throws {
        let train = squaresDataset(count: 192, seed: 5)
        for defense in [nil, TrainingDefense.pgd(epsilon: 0.1, steps: 2, alpha: 0.05)] {
            let dir = temporaryDirectory()
            func trainer(_ epochs: Int) -> (Model, Trainer) {
                let m = Model(.mlp, inputShape: [1, 12, 12], classes: 4, seed: 3)
                let t = Trainer(model: m, configuration: testTrainingConfiguration(epochs: epochs, seed: 3))
                if let defense { t.batchLoss = defense.batchLoss(seed: 3) }
                return (m, t)
            }
            let (whole, t1) = trainer(3)
            try t1.fit(train, checkpoint: dir + "/whole.safetensors")
            // "Interrupted" after one epoch, then resumed by a new process's worth of objects.
            let (_, t2) = trainer(1)
            try t2.fit(train, checkpoint: dir + "/part.safetensors")
            let (resumed, t3) = trainer(3)
            let history = try t3.fit(train, checkpoint: dir + "/part.safetensors", resume: true)
            XCTAssertEqual(history.map(\.epoch), [2, 3], "only the missing epochs run")
            for (a, b) in zip(whole.stateDict, resumed.stateDict) {
                XCTAssertEqual(a.tensor.value, b.tensor.value, "\(a.name) (defense \(defense.map { "\($0)" } ?? "none"))")
            }
            XCTAssertThrowsError(try trainer(3).1.fit(train, checkpoint: dir + "/whole.safetensors", resume: true)) {
                XCTAssertTrue("\($0)".contains("nothing to resume"), "\($0)")
            }
            XCTAssertThrowsError(try trainer(3).1.fit(train, checkpoint: dir + "/none.safetensors", resume: true)) {
                XCTAssertTrue("\($0)".contains("no checkpoint state to resume from"), "\($0)")
            }
        }
    }

    func testShuffleIsAPermutationAndDependsOnSeedAndEpoch() {
        let p = Trainer.permutation(count: 1000, seed: 1, epoch: 0)
        XCTAssertEqual(p.sorted(), Array(0..<1000))
        XCTAssertEqual(p, Trainer.permutation(count: 1000, seed: 1, epoch: 0))
        XCTAssertNotEqual(p, Trainer.permutation(count: 1000, seed: 1, epoch: 1))
        XCTAssertNotEqual(p, Trainer.permutation(count: 1000, seed: 2, epoch: 0))
    }

    func testSeedGivesPyTorchsInitialWeightsAndShuffle() {
        // Values printed by PyTorch 2.15: torch.manual_seed(0); Net() with the reference CNN's modules, and
        // torch.randperm(60000, generator=torch.Generator().manual_seed(0)) twice (epochs 1 and 2).
        let model = Model(.cnn, seed: 0)
        let expected: [String: (first: [Float], last: Float, sum: Double)] = [
            "conv1.weight": ([-0.0014973640209063888, 0.10728871822357178, -0.16460902988910675], -0.03537311777472496, -1.0115338726973278),
            "conv1.bias": ([0.08897250145673752, -0.08548736572265625, 0.15944074094295502], -0.040481068193912506, 0.5710930690984242),
            "conv2.weight": ([0.003545439336448908, -0.013151844963431358, -0.029608462005853653], 0.019894173368811607, 1.835262778014794),
            "conv2.bias": ([-0.016731021925807, 0.003838604548946023, 0.015677018091082573], -0.008173159323632717, 0.05448343767784536),
            "fc1.weight": ([0.02108481153845787, -0.02781463786959648, -0.012157998979091644], 0.01630832627415657, 10.65518343821168),
            "fc1.bias": ([0.028740588575601578, -0.0068674273788928986, -0.02834199368953705], 0.023572470992803574, 0.16437023878097534),
            "fc2.weight": ([-0.04484746977686882, 0.013366209343075752, -0.08201859891414642], -0.02214604988694191, -3.8038209684746107),
            "fc2.bias": ([-0.01616239920258522, -0.0707031637430191, -0.0730103924870491], -0.04339994862675667, -0.046118457801640034),
        ]
        let state = Dictionary(uniqueKeysWithValues: model.stateDict.map { ($0.name, $0.tensor.value) })
        XCTAssertEqual(Set(state.keys), Set(expected.keys))
        for (name, e) in expected {
            let v = state[name]!.scalars
            XCTAssertEqual(Array(v.prefix(3)), e.first, name)  // bit for bit
            XCTAssertEqual(v.last, e.last, name)
            // PyTorch summed in double in its own order: equal to rounding, far tighter than any other draw would be.
            XCTAssertEqual(v.reduce(0.0) { $0 + Double($1) }, e.sum, accuracy: 1e-9 * Double(v.count), name)
        }
        XCTAssertEqual(Array(Trainer.permutation(count: 60000, seed: 0, epoch: 0).prefix(8)),
                       [36044, 10678, 57327, 55074, 21567, 15479, 9481, 43095])
        XCTAssertEqual(Array(Trainer.permutation(count: 60000, seed: 0, epoch: 1).prefix(8)),
                       [27953, 38120, 7367, 44667, 1513, 24140, 14424, 14285])
        // torch.manual_seed(0); torch.empty(4).uniform_(-1, 1)
        var g = TorchGenerator(seed: 0)
        XCTAssertEqual((0..<4).map { _ in g.uniform(from: -1, to: 1) },
                       [-0.007486820220947266, 0.5364435911178589, -0.8230451345443726, -0.7359390258789062])
    }

    func testBadSettingsAndDataAreRejected() throws {
        let train = squaresDataset(count: 8, seed: 4)
        var c = testTrainingConfiguration(epochs: 3)
        c.batchSize = 0
        XCTAssertThrowsError(try Trainer(model: Model(.mlp, inputShape: [1, 12, 12], classes: 4), configuration: c).fit(train)) {
            XCTAssertTrue("\($0)".contains("batch size must be >= 1"))
        }
        XCTAssertThrowsError(try Trainer(model: Model(.mlp, inputShape: [1, 28, 28], classes: 4), configuration: testTrainingConfiguration(epochs: 3)).fit(train)) {
            XCTAssertTrue("\($0)".contains("the model takes [1, 28, 28]"))
        }
        XCTAssertThrowsError(try Dataset(images: Tensor([Float.nan], shape: [1, 1, 1, 1]), labels: [0], classNames: ["a", "b"])) {
            XCTAssertTrue("\($0)".contains("NaN"))
        }
        XCTAssertThrowsError(try Dataset(images: Tensor([0.5], shape: [1, 1, 1, 1]), labels: [2], classNames: ["a", "b"])) {
            XCTAssertTrue("\($0)".contains("outside [0, 2)"))
        }
    }

    func testOptimizersMinimiseAQuadratic() {
        for opt: Optimizer in [SGD(learningRate: 0.1, momentum: 0.9), Adam(learningRate: 0.1)] {
            let p = Parameter(Tensor([3, -2]))
            for _ in 0..<200 { opt.step([p], gradients: [p.value * 2]) }  // d/dp |p|^2
            XCTAssertLessThan(p.value.maxAbs(), 0.05, "\(type(of: opt))")
        }
        XCTAssertEqual(LearningRateSchedule.step(every: 2, factor: 0.5).rate(base: 1, epoch: 5), 0.25)
        XCTAssertEqual(LearningRateSchedule.cosine(epochs: 10).rate(base: 1, epoch: 10), 0, accuracy: 1e-6)
    }

    /// 12×12 → 16×16 (the reference CNN needs at least 16×16), zero border.
    private func pad(_ x: Tensor) -> Tensor {
        let n = x.shape[0]
        var out = Tensor(zeros: [n, 1, 16, 16])
        for i in 0..<n { for y in 0..<12 { for xx in 0..<12 { out[i, 0, y + 2, xx + 2] = x[i, 0, y, xx] } } }
        return out
    }
}

/// The PyTorch-trained reference CNN, attacked here and back: same logits, same accuracy.
final class PyTorchInteropTests: XCTestCase {
    func testLogitsAndAccuracyMatchPyTorch() throws {
        guard FileManager.default.fileExists(atPath: RepositoryPaths.peerResults) else {
            throw XCTSkip("\(RepositoryPaths.peerResults) is not beside the repository")
        }
        let test = try fashionMNISTTest().prefix(1024)
        let model = Model(.cnn)
        try model.load(from: RepositoryPaths.peerModel)
        let results = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: RepositoryPaths.peerResults))) as! [String: Any]
        let clean = results["clean"] as! [String: Any]
        let want = clean["logits_first4"] as! [[Double]]
        let logits = model.logits(test.images.batch(0..<4))
        for i in 0..<4 {
            // PyTorch's figures are printed to 5 decimals: agreement to 1e-4 is what the file can show.
            assertClose(logits.row(i), want[i], atol: 1e-4, rtol: 0, "logits of image \(i)")
        }
        let accuracy = model.accuracy(test.images, labels: test.labels)
        XCTAssertEqual(accuracy, clean["accuracy"] as! Double, accuracy: 0.5 / 1024, "PyTorch: 89.36%")
        let pred = model.predict(test.images).classes.map(String.init).joined()
        XCTAssertEqual(pred, clean["pred"] as? String, "every prediction agrees with PyTorch's")
    }
}
