import Foundation

/// Labelled images: (N, C, H, W) in [0, 1] and N labels in [0, classes).
public struct Dataset {
    public var images: Tensor
    public var labels: [Int32]
    public var classNames: [String]
    public var name: String
    /// The files the images came from (nil for the built-in datasets' loaders): their format and layout, for
    /// writing adversarial images back in kind, and whether the labels are a model's predictions.
    public var source: DataSource?
    /// Each image's file relative to its folder (image folders), kept in step by `prefix` and `subset`.
    public var imageNames: [String]?

    public var count: Int { labels.count }
    public var classCount: Int { classNames.count }
    /// (C, H, W) of one image.
    public var imageShape: Shape { Shape(Array(images.shape.dims.dropFirst())) }

    /// Checks that images and labels agree, pixels are finite and inside [0, 1], labels are classes.
    public init(images: Tensor, labels: [Int32], classNames: [String], name: String = "dataset") throws {
        guard images.shape.rank == 4 else {
            throw AdvKitError.invalidData("\(name): images must be (N, C, H, W), got \(images.shape)")
        }
        guard images.shape[0] == labels.count else {
            throw AdvKitError.invalidData("\(name): \(images.shape[0]) images but \(labels.count) labels")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= classNames.count }) {
            throw AdvKitError.invalidData("\(name): label \(bad) is \(labels[bad]), outside [0, \(classNames.count))")
        }
        try Dataset.validatePixels(images, name: name)
        self.images = images
        self.labels = labels
        self.classNames = classNames
        self.name = name
    }

    static func validatePixels(_ images: Tensor, name: String, lo: Float = 0, hi: Float = 1) throws {
        let d = images.shape.itemCount
        try images.withUnsafeBufferPointer { p in
            for i in 0..<p.count where !(p[i] >= lo && p[i] <= hi) {
                let what = p[i].isNaN ? "NaN" : (p[i].isInfinite ? "infinite" : "\(p[i]), outside [\(lo), \(hi)]")
                throw AdvKitError.invalidData("\(name): image \(i / Swift.max(d, 1)) has a pixel that is \(what)")
            }
        }
    }

    /// The first `n` examples (all when n is nil or larger).
    public func prefix(_ n: Int?) -> Dataset {
        guard let n, n < count else { return self }
        var d = self
        d.images = images.batch(0..<Swift.max(n, 0))
        d.labels = Array(labels.prefix(Swift.max(n, 0)))
        d.imageNames = imageNames.map { Array($0.prefix(Swift.max(n, 0))) }
        return d
    }

    /// Examples at `indices`, in that order.
    public func subset(_ indices: [Int]) -> Dataset {
        var d = self
        d.images = images.gather(indices)
        d.labels = indices.map { labels[$0] }
        d.imageNames = imageNames.map { names in indices.map { names[$0] } }
        return d
    }

    public static let fashionMNISTClasses = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                             "Sneaker", "Bag", "Ankle boot"]
    public static let mnistClasses = (0...9).map(String.init)
    public static let cifar10Classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// Where Debian's `dataset-fashion-mnist` installs Fashion-MNIST.
    public static let defaultFashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

    public enum Split: String, Sendable { case train, test }

    /// MNIST or Fashion-MNIST from `directory`: `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
    /// `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`.
    public static func mnistFormat(directory: String, split: Split, classNames: [String] = fashionMNISTClasses,
                                   name: String = "fashion-mnist", first: Int? = nil) throws -> Dataset {
        let stem = split == .train ? "train" : "t10k"
        func find(_ base: String) throws -> String {
            for candidate in [base + ".gz", base] where FileManager.default.fileExists(atPath: directory + "/" + candidate) {
                return directory + "/" + candidate
            }
            var hint = ""
            if directory == defaultFashionMNISTDirectory { hint = " (install Debian's package dataset-fashion-mnist)" }
            throw AdvKitError.io(path: directory + "/" + base + "[.gz]", reason: "no such file\(hint)")
        }
        let imagesPath = try find("\(stem)-images-idx3-ubyte"), labelsPath = try find("\(stem)-labels-idx1-ubyte")
        return try fromIDX(images: imagesPath, labels: labelsPath, classNames: classNames, name: "\(name) \(split.rawValue)",
                           first: first)
    }

    /// Images and labels from two IDX files (uint8 images are scaled by 1/255; float32 images are taken as
    /// they are, which is how AdvKit writes adversarial examples). `first`: only the first images and labels are
    /// read (the rest of the files is not decompressed: `advkit --limit` on the 10,000 test images).
    public static func fromIDX(images: String, labels: String, classNames: [String]? = nil, name: String? = nil,
                               first: Int? = nil) throws -> Dataset {
        let x = try IDX.readImages(images, first: first)
        let y = try IDX.readLabels(labels, first: first)
        let k = classNames?.count ?? Swift.max(10, Int(y.max() ?? 0) + 1)
        return try Dataset(images: x, labels: y, classNames: classNames ?? (0..<k).map(String.init),
                           name: name ?? URL(fileURLWithPath: images).lastPathComponent)
    }
}
