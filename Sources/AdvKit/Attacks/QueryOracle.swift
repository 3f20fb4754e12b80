import Foundation

// What a query (black-box) attack may know of a model: its outputs on images it asks about, counted per image,
// and nothing else. A query attack conforms to `QueryAttack`; its code receives a `QueryCounter` (the oracle),
// never the `Classifier`, so it cannot take a gradient even by accident: the counter keeps the model private,
// runs it on an inference tape of its own and hands back plain tensors, which carry no tape.

/// What a score oracle's rows are.
public enum ScoreKind: String, Sendable {
    /// Unnormalised log-probabilities: log-softmax turns them into log-probabilities.
    case logits
    /// Probabilities (each row sums to 1).
    case probabilities
}

/// A score-based oracle (the threat model of Square, Andriushchenko et al. 2020): the scores of a batch of
/// queries, nothing else.
public protocol ScoreOracle: AnyObject {
    var classCount: Int { get }
    /// (C, H, W) of one image.
    var inputShape: Shape { get }
    /// Logits or probabilities.
    var scoreKind: ScoreKind { get }
    /// Scores (n, K) of `queries` (n, C, H, W). Row r is a query on behalf of image `images[r]` (an index into
    /// the batch being attacked) and is charged to that image.
    func scores(_ queries: Tensor, for images: [Int]) -> Tensor
}

/// A decision-based oracle (the threat model of HopSkipJump, Chen, Jordan & Wainwright 2020): the top-1 label
/// of each query, nothing else.
public protocol LabelOracle: AnyObject {
    var classCount: Int { get }
    var inputShape: Shape { get }
    /// The predicted class of each query (n, C, H, W); row r is charged to image `images[r]`.
    func labels(_ queries: Tensor, for images: [Int]) -> [Int]
}

extension ScoreOracle {
    /// log p (n, K) of `queries`, whichever kind the scores are: log-softmax of logits, or log of probabilities
    /// (floored at 1e-30). Margins and cross-entropies taken from these equal the ones taken from the logits
    /// (log-softmax only shifts each row).
    public func logProbabilities(_ queries: Tensor, for images: [Int]) -> Tensor {
        let s = scores(queries, for: images)
        switch scoreKind {
        case .logits: return Kernels.logSoftmax(s)
        case .probabilities: return s.map { Foundation.log(Swift.max($0, 1e-30)) }
        }
    }
}

/// The oracle over a `Classifier`: forward outputs only (logits, on its own inference tape), and a count of the
/// queries each image of the batch has cost. With a `budget`, a query beyond an image's budget is a programmer
/// error (the attack must check `remaining(_:)` first) and traps.
public final class QueryCounter: ScoreOracle, LabelOracle {
    private let model: Classifier
    private let tape = Tape(mode: .inference)
    /// The most queries any one image may cost, or nil for no limit.
    public let budget: Int?
    /// Queries charged to each image of the batch so far.
    public private(set) var queries: [Int]
    /// Oracle calls (batches of queries) so far.
    public private(set) var calls = 0
    /// Rows are run through the model this many at a time.
    public var chunkSize = 256

    public var classCount: Int { model.classCount }
    public var inputShape: Shape { model.inputShape }
    public var scoreKind: ScoreKind { .logits }

    /// A counter for a batch of `images` images, each allowed `budget` queries (nil: unlimited).
    public init(_ model: Classifier, images: Int, budget: Int? = nil) {
        precondition(images >= 0, "a query counter needs images >= 0, got \(images)")
        precondition(budget.map { $0 >= 0 } ?? true, "a query budget must be >= 0")
        self.model = model
        self.budget = budget
        queries = [Int](repeating: 0, count: images)
    }

    /// The queries image `i` may still make (Int.max without a budget).
    public func remaining(_ i: Int) -> Int { budget.map { $0 - queries[i] } ?? Int.max }

    /// All queries charged so far.
    public var total: Int { queries.reduce(0, +) }

    public func scores(_ x: Tensor, for images: [Int]) -> Tensor {
        precondition(x.shape.rank == 4 && x.shape[0] == images.count,
                     "\(images.count) image indices for queries of shape \(x.shape)")
        for i in images {
            precondition(i >= 0 && i < queries.count, "query charged to image \(i), outside [0, \(queries.count))")
            queries[i] += 1
            if let b = budget { precondition(queries[i] <= b, "image \(i) went over its budget of \(b) queries") }
        }
        calls += 1
        let n = x.shape[0]
        guard n > 0 else { return Tensor(zeros: [0, classCount]) }
        var parts: [Tensor] = []
        var start = 0
        while start < n {
            let end = Swift.min(start + chunkSize, n)
            tape.reset()
            parts.append(model(tape.input(start == 0 && end == n ? x : x.batch(start..<end))).value)
            start = end
        }
        tape.reset()
        return parts.count == 1 ? parts[0] : Tensor.concatenate(parts)
    }

    public func labels(_ x: Tensor, for images: [Int]) -> [Int] {
        scores(x, for: images).argmaxRows()
    }
}

/// An attack that sees the model only through a `QueryCounter`. It implements `attack(_:_:)`; the
/// `perturb(_:_:)` that `Attack` requires wraps the classifier in a counter with the attack's budget and calls
/// it, so the attack's code never holds the classifier.
public protocol QueryAttack: Attack {
    /// The most oracle queries any one image may cost (over every restart, the clean check included).
    var queryBudget: Int { get }
    /// Adversarial images for one batch, from the oracle alone; the oracle's image indices are the batch's rows.
    func attack(_ oracle: QueryCounter, _ batch: AttackBatch) -> Tensor
}

/// A query attack's result and the queries each image cost.
public struct QueryAttackResult {
    public var result: AttackResult
    /// Oracle queries each image cost, in image order (the clean check included; the outcome measurement that
    /// `run` makes afterwards is not the attack's and is not counted).
    public var queries: [Int]

    /// Mean and median queries of the images the attack succeeded on (nil when none did), as Square's and
    /// HopSkipJump's papers report them.
    public var meanQueriesOfSuccesses: Double? {
        let q = zip(result.outcomes, queries).filter { $0.0.success }.map { Double($0.1) }
        return q.isEmpty ? nil : q.reduce(0, +) / Double(q.count)
    }
    public var medianQueriesOfSuccesses: Double? {
        median(zip(result.outcomes, queries).filter { $0.0.success }.map { Double($0.1) })
    }
}

extension QueryAttack {
    public func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        attack(QueryCounter(model, images: batch.count, budget: queryBudget), batch)
    }

    /// `run`, and the queries each image cost.
    public func runCountingQueries(_ model: Classifier, images: Tensor, labels: [Int32], goal: Goal = .untargeted,
                                   bounds: PixelBounds = .unit, seed: UInt64 = 0, batchSize: Int = 128,
                                   progress: ProgressReporter.Style = .silent) throws -> QueryAttackResult {
        let log = QueryLog(count: labels.count)
        let result = try CountingQueries(base: self, log: log).run(model, images: images, labels: labels, goal: goal,
                                                                    bounds: bounds, seed: seed, batchSize: batchSize,
                                                                    progress: progress)
        return QueryAttackResult(result: result, queries: log.queries)
    }
}

/// Per-image query counts gathered batch by batch.
final class QueryLog {
    var queries: [Int]
    init(count: Int) { queries = [Int](repeating: 0, count: count) }
}

/// A query attack whose batches leave their query counts in a log (what `runCountingQueries` runs).
struct CountingQueries<Base: QueryAttack>: Attack {
    let base: Base
    let log: QueryLog
    var name: String { base.name }
    var settings: [String: SettingValue] { base.settings }
    func validate() throws { try base.validate() }

    func perturb(_ model: Classifier, _ batch: AttackBatch) -> Tensor {
        let oracle = QueryCounter(model, images: batch.count, budget: base.queryBudget)
        let adversarial = base.attack(oracle, batch)
        for (i, q) in oracle.queries.enumerated() { log.queries[batch.offset + i] = q }
        return adversarial
    }
}
