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
