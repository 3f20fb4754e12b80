import AdvKit

/// A small, learnable image task made in the test: class k is a bright 3×3 square at one of `classes`
/// fixed places on a noisy background. A CNN learns it in seconds.
public func squaresDataset(count: Int, classes: Int = 4, size: Int = 12, seed: UInt64) -> Dataset {
    var rng = SeededGenerator(seed: seed, stream: 5)
    var pixels = [Float](repeating: 0, count: count * size * size)
    var labels = [Int32]()
    let places = (0..<classes).map { k in ((k * 5 + 1) % (size - 3), (k * 3 + 2) % (size - 3)) }
    for n in 0..<count {
        let k = Int(rng.next() % UInt64(classes))
        labels.append(Int32(k))
        for i in 0..<(size * size) { pixels[n * size * size + i] = 0.3 * rng.nextUniform() }
        let (py, px) = places[k]
        for y in py..<(py + 3) { for x in px..<(px + 3) { pixels[n * size * size + y * size + x] = 0.7 + 0.3 * rng.nextUniform() } }
    }
    return try! Dataset(images: Tensor(pixels, shape: [count, 1, size, size]), labels: labels,
                        classNames: (0..<classes).map { "square \($0)" }, name: "squares")
}

/// Training settings for the small tasks of the tests: batches of 32, Adam 3e-3, no progress output.
public func testTrainingConfiguration(epochs: Int, seed: UInt64 = 0) -> TrainingConfiguration {
    var c = TrainingConfiguration()
    c.epochs = epochs
    c.batchSize = 32
    c.learningRate = 3e-3
    c.seed = seed
    c.progress = .silent
    return c
}

/// A reference CNN trained here (seed 0, Adam 1e-3, batch 64, 1 epoch on the first 12,000 Fashion-MNIST training
/// images: about 80% test accuracy, a few seconds in release) and the first 256 test images; trained once per test
/// process. For attack tests that need a real model in any clone (no ../shared).
public func trainedReferenceCNN() throws -> (model: Model, test: Dataset) {
    if let c = TrainedCache.value { return c }
    let test = try fashionMNISTTest().prefix(256)
    let train = try Dataset.mnistFormat(directory: Dataset.defaultFashionMNISTDirectory, split: .train).prefix(12_000)
    let model = Model(.cnn, seed: 0)
    var config = testTrainingConfiguration(epochs: 1)
    config.batchSize = 64
    config.learningRate = 1e-3
    _ = try Trainer(model: model, configuration: config).fit(train)
    TrainedCache.value = (model, test)
    return (model, test)
}

private enum TrainedCache {
    nonisolated(unsafe) static var value: (model: Model, test: Dataset)?
}
