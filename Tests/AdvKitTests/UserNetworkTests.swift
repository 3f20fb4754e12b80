@_spi(Testing) import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

/// The model boundary: a network the user composes from AdvKit's layers (not one of the built-in architectures) and
/// an imported ONNX graph are trained by `Trainer` with checkpoints and resume, saved, loaded, attacked, and trained
/// with a training defense, like `Model`.
final class UserNetworkTests: XCTestCase {
    /// stem conv → ReLU → residual block (conv, batch norm, ReLU, conv; + identity; ReLU) → 2×2 average pool →
    /// flatten → linear: 12×12 images of the squares task, 4 classes.
    static func userNetwork(seed: UInt64) -> Network {
        var rng = TorchGenerator(seed: seed)
        let block = Residual(body: Sequential([
            ("conv1", Conv2D(inputChannels: 8, outputChannels: 8, kernelSize: 3, padding: 1, rng: &rng)),
            ("bn1", BatchNorm2D(features: 8)),
            ("act", ReLU()),
            ("conv2", Conv2D(inputChannels: 8, outputChannels: 8, kernelSize: 3, padding: 1, rng: &rng)),
        ]))
        let body = Sequential([
            ("stem", Conv2D(inputChannels: 1, outputChannels: 8, kernelSize: 3, padding: 1, rng: &rng)),
            ("act", ReLU()),
            ("block", block),
            ("pool", AvgPool2D(kernelSize: 2)),
            ("flatten", Flatten()),
            ("fc", Linear(inputFeatures: 8 * 6 * 6, outputFeatures: 4, rng: &rng)),
        ])
        return Network(body, inputShape: [1, 12, 12], classes: 4)
    }

    func testNamesAndShapesComeFromTheLayers() {
        let net = Self.userNetwork(seed: 0)
        XCTAssertEqual(net.stateDict.map(\.name), [
            "stem.weight", "stem.bias", "block.conv1.weight", "block.conv1.bias", "block.bn1.weight", "block.bn1.bias",
            "block.bn1.running_mean", "block.bn1.running_var", "block.conv2.weight", "block.conv2.bias", "fc.weight", "fc.bias",
        ])
        XCTAssertEqual(net.parameters.count, 10, "the running statistics are buffers, not trained")
        XCTAssertEqual(net.logits(squaresDataset(count: 3, seed: 1).images).shape, [3, 4])
        let asTrainable: TrainableClassifier = net
        XCTAssertEqual(asTrainable.classCount, 4)
    }

    /// Trained 2 epochs with a checkpoint, and "interrupted" after epoch 1 then resumed by new objects: the same
    /// weights and running statistics bit for bit, with and without PGD adversarial training. The checkpoint and an
    /// explicit save load back into a fresh network with the same logits; the trained network learned the task and
    /// PGD lowers its accuracy.
    func testTrainedCheckpointedResumedSavedLoadedAndAttacked() throws {
        let train = squaresDataset(count: 384, seed: 11), test = squaresDataset(count: 200, seed: 12)
        for defense in [nil, TrainingDefense.pgd(epsilon: 0.1, steps: 2, alpha: 0.05)] {
            let label = defense.map { "\($0)" } ?? "no defense"
            let dir = temporaryDirectory()
            func trainer(_ epochs: Int, initSeed: UInt64 = 1) -> (Network, Trainer) {
                let net = Self.userNetwork(seed: initSeed)
                let t = Trainer(model: net, configuration: testTrainingConfiguration(epochs: epochs, seed: 5))
                if let defense { t.batchLoss = defense.batchLoss(seed: 5) }
                return (net, t)
            }
            let (whole, t1) = trainer(2)
            let before = whole.stateDict.map { $0.tensor.value }
            let history = try t1.fit(train, test: test, checkpoint: dir + "/whole.safetensors")
            XCTAssertEqual(history.map(\.epoch), [1, 2], label)
            XCTAssertTrue(history.allSatisfy { $0.trainLoss.isFinite }, label)
            XCTAssertNotEqual(whole.stateDict[6].tensor.value, before[6], "\(label): the batch norm ran in training mode (running_mean moved)")

            let (_, t2) = trainer(1)
            try t2.fit(train, checkpoint: dir + "/part.safetensors")
            // A new process's worth of objects, initialised differently: everything comes from the state file.
            let (resumed, t3) = trainer(2, initSeed: 99)
            let rest = try t3.fit(train, checkpoint: dir + "/part.safetensors", resume: true)
            XCTAssertEqual(rest.map(\.epoch), [2], "\(label): only the missing epoch runs")
            XCTAssertEqual(whole.stateDict.map(\.name), resumed.stateDict.map(\.name))
            for (a, b) in zip(whole.stateDict, resumed.stateDict) {
                XCTAssertEqual(a.tensor.value, b.tensor.value, "\(label): \(a.name) after resuming")
            }

            // The checkpoint, and an explicit save, load into fresh networks: the same logits bit for bit.
            let fromCheckpoint = Self.userNetwork(seed: 42)
            try fromCheckpoint.load(from: dir + "/whole.safetensors")
            XCTAssertEqual(fromCheckpoint.logits(test.images), whole.logits(test.images), "\(label): checkpoint")
            try whole.save(to: dir + "/saved.safetensors")
            let loaded = Self.userNetwork(seed: 43)
            XCTAssertNotEqual(loaded.logits(test.images), whole.logits(test.images))
            try loaded.load(from: dir + "/saved.safetensors")
            XCTAssertEqual(loaded.logits(test.images), whole.logits(test.images), "\(label): save and load")
            let file = try Safetensors.read(dir + "/whole.safetensors")
            XCTAssertNil(file.metadata["arch"], "a user network is not one of the architectures")
            XCTAssertEqual(file.metadata["epoch"], "2")

            // Learned, and attackable: PGD (a white-box attack through the residual block and the batch norm).
            let clean = whole.accuracy(test.images, labels: test.labels)
            XCTAssertEqual(history.last!.testAccuracy!, clean, "the trainer's test accuracy is the network's")
            XCTAssertGreaterThan(clean, 0.9, "\(label): the network learned the squares task")
            let eps: Float = 0.3
            let r = try PGD(epsilon: eps, alpha: eps / 4, steps: 10).run(whole, images: test.images, labels: test.labels)
            XCTAssertEqual(r.cleanAccuracy, clean, accuracy: 1e-12)
            XCTAssertLessThan(r.robustAccuracy, clean - 0.2, "\(label): PGD at eps \(eps) lowers the accuracy")
            XCTAssertLessThanOrEqual(r.outcomes.map(\.linf).max()!, eps + 1e-6, "‖δ‖∞ ≤ ε")
            print("user network (\(label)): clean \(clean), PGD eps \(eps) robust \(r.robustAccuracy), losses \(history.map(\.trainLoss))")
        }
    }

    /// The detector network may be any trainable classifier of 2 classes; a wrong one is refused with a clear error.
    func testADetectorNetworkCanBeAUserNetwork() throws {
        let data = squaresDataset(count: 128, seed: 21)
        let protected = Self.userNetwork(seed: 2)
        try Trainer(model: protected, configuration: testTrainingConfiguration(epochs: 1)).fit(data)
        var rng = TorchGenerator(seed: 3)
        let detectorBody = Sequential([
            ("conv", Conv2D(inputChannels: 1, outputChannels: 4, kernelSize: 3, rng: &rng)), ("act", ReLU()),
            ("flatten", Flatten()), ("fc", Linear(inputFeatures: 4 * 10 * 10, outputFeatures: 2, rng: &rng)),
        ])
        let detector = try DetectorNetwork.train(protecting: protected, attack: FGSM(epsilon: 0.3), images: data.images,
                                                 labels: data.labels, network: Network(detectorBody, inputShape: [1, 12, 12], classes: 2),
                                                 configuration: testTrainingConfiguration(epochs: 2))
        XCTAssertEqual(detector.scores(data.images).count, data.count)
        XCTAssertThrowsError(try DetectorNetwork.train(protecting: protected, attack: FGSM(epsilon: 0.3), images: data.images,
                                                       labels: data.labels, network: Self.userNetwork(seed: 4),
                                                       configuration: testTrainingConfiguration(epochs: 1))) {
            XCTAssertTrue("\($0)".contains("2 classes"), "\($0)")
        }
    }

    // MARK: an imported ONNX graph

    static var cnnFixture: String { RepositoryPaths.root + "/Tests/Fixtures/onnx/cnn_dynamo.onnx" }

    /// Mean cross-entropy of `model` on (x, y), in Double from the logits, and the forward pass's kink signature.
    private func meanLoss(_ model: Classifier, _ x: Tensor, _ y: [Int32]) -> (loss: Double, kinks: Int) {
        let tape = Tape(mode: .inference)
        let z = model(tape.input(x))
        let ce = Reference.crossEntropy(z.value.scalars, labels: y.map(Int.init), k: model.classCount).loss
        return (ce.reduce(0, +) / Double(ce.count), tape.kinkSignature())
    }

    /// The tape's weight gradients of the imported reference CNN agree with central differences (3 coordinates of
    /// each weight, among its largest gradients, away from ReLU/max-pool kinks). One image: a weight of conv1 moves
    /// hundreds of pre-activations per image, and each image makes a kink within eps more likely.
    func testImportedGraphWeightGradientsMatchFiniteDifferences() throws {
        let m = try ONNXClassifier(contentsOf: Self.cnnFixture)
        let data = try fashionMNISTTest().prefix(1)
        let named = m.namedTensors
        XCTAssertEqual(named.count, 8, "\(named.map(\.name))")  // conv1, conv2, fc1, fc2: weight and bias each
        let tape = Tape(mode: .training)
        let loss = tape.crossEntropy(m(tape.input(data.images)), labels: data.labels).mean()
        let grads = tape.gradients(of: loss, wrt: named.map { $0.tensor.storage })
        let (_, kinks) = meanLoss(m, data.images, data.labels)
        let eps: Float = 1e-3
        var checked = 0
        for ((name, t), g) in zip(named, grads) where t.storage.value.shape.rank >= 2 {
            let p = t.storage
            let gs = g.scalars
            let order = (0..<gs.count).sorted { abs(gs[$0]) > abs(gs[$1]) }
            var here = 0, skipped = 0
            for i in order.prefix(60) where here < 3 {
                let original = p.value
                var plus = original, minus = original
                plus.withUnsafeMutableBufferPointer { $0[i] += eps }
                minus.withUnsafeMutableBufferPointer { $0[i] -= eps }
                p.value = plus
                let lp = meanLoss(m, data.images, data.labels)
                p.value = minus
                let lm = meanLoss(m, data.images, data.labels)
                p.value = original
                guard lp.kinks == kinks && lm.kinks == kinks else {
                    skipped += 1
                    continue
                }
                // The weight moves by exactly ±eps only if plus/minus are representable: use the actual step.
                let step = Double(plus.scalars[i]) - Double(minus.scalars[i])
                let numeric = (lp.loss - lm.loss) / step
                // The float32 forward rounds the logits (~1e-7 of them) and the step is 2e-3: up to ~5e-4 of noise in
                // the difference quotient in theory; measured within 2e-5 on these coordinates.
                assertClose([gs[i]], [numeric], atol: 2e-4, rtol: 2e-3, "\(name)[\(i)]")
                print("\(name)[\(i)]: tape \(gs[i]), finite differences \(numeric)")
                here += 1
            }
            XCTAssertEqual(here, 3, "\(name): 3 coordinates away from kinks (\(skipped) skipped)")
            checked += here
        }
        XCTAssertEqual(checked, 12)
    }

    /// Where load-time simplification replaced an initializer, the tape reads the replacement, and that is what is
    /// trained and saved: a BatchNormalization folded into the convolution before it ("W+bn", "B+bn"; the batch norm's
    /// own initializers are no longer read), an (IN, OUT) MatMul weight run as Linear's (OUT, IN) ("F+Transpose").
    /// Every listed tensor gets a gradient from a training loss, and `Trainer` lowers the loss through them.
    func testImportedGraphsTrainTheTensorsTheTapeReads() throws {
        var rng = SeededGenerator(seed: 4, stream: 1)
        func tensor(_ name: String, _ dims: [Int], lo: Float = -1, hi: Float = 1) -> ONNXTensor {
            let v = (0..<dims.reduce(1, *)).map { _ in lo + (hi - lo) * rng.nextUniform() }
            return ONNXTensor(name: name, dataType: .float, dims: dims, values: .float(Tensor(v, shape: Shape(dims))))
        }
        let inits = [tensor("W", [4, 1, 3, 3]), tensor("B", [4]), tensor("g", [4], lo: 0.5, hi: 1.5), tensor("b", [4]),
                     tensor("m", [4]), tensor("v", [4], lo: 0.2, hi: 2), tensor("F", [4, 3]), tensor("c", [3])]
        let nodes = [
            ONNXNode(name: "conv", opType: "Conv", domain: "", inputs: ["x", "W", "B"], outputs: ["y"], attributes: ["pads": .ints([1, 1, 1, 1])]),
            ONNXNode(name: "bn", opType: "BatchNormalization", domain: "", inputs: ["y", "g", "b", "m", "v"], outputs: ["z"], attributes: [:]),
            ONNXNode(name: "relu", opType: "Relu", domain: "", inputs: ["z"], outputs: ["r"], attributes: [:]),
            ONNXNode(name: "gap", opType: "GlobalAveragePool", domain: "", inputs: ["r"], outputs: ["p"], attributes: [:]),
            ONNXNode(name: "flat", opType: "Flatten", domain: "", inputs: ["p"], outputs: ["f"], attributes: [:]),
            ONNXNode(name: "mm", opType: "MatMul", domain: "", inputs: ["f", "F"], outputs: ["h"], attributes: [:]),
            ONNXNode(name: "add", opType: "Add", domain: "", inputs: ["h", "c"], outputs: ["logits"], attributes: [:]),
        ]
        let graph = ONNXGraph(name: "g", nodes: nodes, initializers: Dictionary(uniqueKeysWithValues: inits.map { ($0.name, $0) }),
                              inputs: [ONNXValueInfo(name: "x", elementType: .float, dims: [.symbolic("n"), .fixed(1), .fixed(6), .fixed(6)])],
                              outputs: [ONNXValueInfo(name: "logits", elementType: .float, dims: [.symbolic("n"), .fixed(3)])])
        let m = try ONNXClassifier(ONNXModel(irVersion: 8, producerName: "test", producerVersion: "", opsetImports: ["": 17], graph: graph))
        XCTAssertTrue(m.notes.contains { $0.contains("folded 1 BatchNormalization") }, "\(m.notes)")
        XCTAssertEqual(m.namedTensors.map(\.name), ["W+bn", "B+bn", "F+Transpose", "c"])
        XCTAssertEqual(m.namedTensors[2].tensor.storage.value.shape, [3, 4], "Linear's (OUT, IN)")

        let x = randomTensor([24, 1, 6, 6], seed: 8, lo: 0, hi: 1)
        let data = try Dataset(images: x, labels: (0..<24).map { Int32($0 % 3) }, classNames: ["a", "b", "c"])
        let tape = Tape(mode: .training)
        let loss = tape.crossEntropy(m(tape.input(x)), labels: data.labels).mean()
        for ((name, t), g) in zip(m.namedTensors, tape.gradients(of: loss, wrt: m.namedTensors.map { $0.tensor.storage })) {
            XCTAssertNotNil(tape.variable(for: t.storage), "\(name) is read by the tape")
            XCTAssertGreaterThan(g.maxAbs(), 0, "\(name) gets a gradient")
        }
        var config = testTrainingConfiguration(epochs: 5)
        config.batchSize = 24
        config.learningRate = 0.05
        let history = try Trainer(model: m, configuration: config).fit(data)
        XCTAssertLessThan(history.last!.trainLoss, history.first!.trainLoss, "\(history.map(\.trainLoss))")

        // Exported graphs: tf2onnx's (IN, OUT) dense kernels are trained transposed; every listed tensor is on the tape.
        for fixture in ["keras_cnn", "resnet_bn_norm", "ops_zoo_dynamo"] {
            let f = try ONNXClassifier(contentsOf: RepositoryPaths.root + "/Tests/Fixtures/onnx/" + fixture + ".onnx")
            let named = f.namedTensors
            if fixture == "keras_cnn" { XCTAssertEqual(named.filter { $0.name.hasSuffix("+Transpose") }.count, 2, "\(named.map(\.name))") }
            let t = Tape(mode: .training)
            let xf = randomTensor(Shape([2] + f.inputShape.dims), seed: 7, lo: 0, hi: 1)
            let lf = t.crossEntropy(f(t.input(xf)), labels: [0, 1]).mean()
            for ((name, p), g) in zip(named, t.gradients(of: lf, wrt: named.map { $0.tensor.storage })) {
                XCTAssertNotNil(t.variable(for: p.storage), "\(fixture): \(name) is read by the tape")
                XCTAssertTrue(g.isFinite, "\(fixture): \(name)")
            }
        }
    }

    /// Fine-tuned by `Trainer` on a few Fashion-MNIST images: the loss falls; the checkpoint resumes to the same
    /// tensors as an uninterrupted run; saved tensors load into a freshly imported graph with the same logits.
    func testImportedGraphIsFineTunedCheckpointedAndReloaded() throws {
        let data = try fashionMNISTTest().prefix(64)
        var config = testTrainingConfiguration(epochs: 4, seed: 2)
        config.learningRate = 1e-3
        let dir = temporaryDirectory()
        let m = try ONNXClassifier(contentsOf: Self.cnnFixture)
        let start = meanLoss(m, data.images, data.labels).loss
        let history = try Trainer(model: m, configuration: config).fit(data, checkpoint: dir + "/onnx.safetensors")
        let end = meanLoss(m, data.images, data.labels).loss
        XCTAssertLessThan(end, start * 0.8, "fine-tuning lowers the loss on its images (losses \(history.map(\.trainLoss)))")
        XCTAssertLessThan(history.last!.trainLoss, history.first!.trainLoss)
        print("ONNX fine-tuning: loss \(start) -> \(end), epochs \(history.map(\.trainLoss))")

        // Interrupted after 2 epochs and resumed by a freshly imported graph: the same tensors.
        var half = config
        half.epochs = 2
        try Trainer(model: try ONNXClassifier(contentsOf: Self.cnnFixture), configuration: half).fit(data, checkpoint: dir + "/part.safetensors")
        let resumed = try ONNXClassifier(contentsOf: Self.cnnFixture)
        try Trainer(model: resumed, configuration: config).fit(data, checkpoint: dir + "/part.safetensors", resume: true)
        for (a, b) in zip(m.namedTensors, resumed.namedTensors) { XCTAssertEqual(a.tensor.storage.value, b.tensor.storage.value, a.name) }

        let fresh = try ONNXClassifier(contentsOf: Self.cnnFixture)
        XCTAssertNotEqual(fresh.logits(of: data.images), m.logits(of: data.images))
        try fresh.load(from: dir + "/onnx.safetensors")
        XCTAssertEqual(fresh.logits(of: data.images), m.logits(of: data.images), "the checkpoint holds the fine-tuned tensors")
    }
}
