import Foundation

/// How the images of an array file were laid out: (N, H, W) grayscale, (N, C, H, W) or (N, H, W, C).
public enum ArrayLayout: String, Sendable, Equatable {
    case nhw, nchw, nhwc
}

/// Where a dataset's images came from, so that adversarial images can be written back in kind.
public struct DataSource: Sendable, Equatable {
    public enum Format: String, Sendable { case idx, npy, npz, imageFolder = "image-folder" }
    public var format: Format
    /// The file or folder of the images.
    public var path: String
    /// Their layout in the file (image folders: (N, H, W) for gray, (N, H, W, C) for RGB, as Pillow's arrays).
    public var layout: ArrayLayout
    /// Where the labels came from: a file, the folder names, an .npz key; nil when there were none.
    public var labels: String?
    /// No labels were given, and a model's predictions on the clean images stand in for them (as ART does).
    public var labelsArePredictions = false
    /// Image folders in the class layout: every class folder, also those without images.
    public var classFolders: [String]?

    public init(format: Format, path: String, layout: ArrayLayout, labels: String? = nil, classFolders: [String]? = nil) {
        self.format = format
        self.path = path
        self.layout = layout
        self.labels = labels
        self.classFolders = classFolders
    }
}

/// How to read images from files: the model's input shape (when known) decides the layout of ambiguous arrays and
/// the channels; explicit settings override.
public struct ImageLoadOptions {
    /// The layout of 4-dimensional arrays; nil: from the shape (channels, 1 or 3, first or last) and `imageShape`.
    public var layout: ImageLayout?
    /// The model's (C, H, W), when known.
    public var imageShape: Shape?
    /// Convert to 1 (gray) or 3 (RGB) channels; nil: `imageShape`'s, else the files' own.
    public var channels: Int?
    /// Resize every image to (height, width); nil: images of different sizes are an error.
    public var resize: (height: Int, width: Int)?
    /// The keys of an .npz's images and labels; nil: the first present of `NPZKeys.images` / `NPZKeys.labels`.
    public var imagesKey: String?
    public var labelsKey: String?
    /// The model's class names in order: image folders' class folders are matched against them.
    public var classNames: [String]?
    /// Read only the first `limit` images.
    public var limit: Int?

    public init(layout: ImageLayout? = nil, imageShape: Shape? = nil, channels: Int? = nil, resize: (height: Int, width: Int)? = nil,
                imagesKey: String? = nil, labelsKey: String? = nil, classNames: [String]? = nil, limit: Int? = nil) {
        self.layout = layout
        self.imageShape = imageShape
        self.channels = channels
        self.resize = resize
        self.imagesKey = imagesKey
        self.labelsKey = labelsKey
        self.classNames = classNames
        self.limit = limit
    }

    /// The channels to convert the images to: the asked 1 or 3, else the model's when it is 1 or 3 (a model with
    /// another channel count gets the images as they are, and the shape check names the mismatch).
    var targetChannels: Int? { channels ?? imageShape.map { $0[0] }.flatMap { $0 == 1 || $0 == 3 ? $0 : nil } }
}

/// The keys looked for in an .npz when none is named: Keras' and scikit-learn's habits, then np.savez's
/// positional names.
public enum NPZKeys {
    public static let images = ["x", "images", "x_test", "X", "X_test", "data", "arr_0"]
    public static let labels = ["y", "labels", "y_test", "Y", "Y_test", "targets", "arr_1"]
}

/// Images read from files, with their labels when the files had any.
public struct LoadedImages {
    /// (N, C, H, W) in [0, 1].
    public var images: Tensor
    public var labels: [Int32]?
    /// Class names the files carry (image folders' folder names, unless names were given).
    public var classNames: [String]?
    /// Each image's file, relative to its folder (image folders only).
    public var imageNames: [String]?
    public var source: DataSource

    public var count: Int { images.shape[0] }

    /// The dataset with the files' labels (an error when they have none: give labels, or use
    /// `dataset(for:defaultClassNames:)` to take a model's predictions). Class names: the files' own, else
    /// `defaultClassNames` (a label past them is an error), else (none given) "0", "1", ... up to the largest label.
    public func dataset(defaultClassNames: [String]) throws -> Dataset {
        guard let labels else {
            throw AdvKitError.invalidData("\(source.path) has no labels: give a labels file (or, to attack or predict, let the model's predictions be the labels)")
        }
        var names = classNames ?? defaultClassNames
        if names.isEmpty { names = (0...Swift.max(Int(labels.max() ?? 0), 1)).map(String.init) }
        return try finish(labels: labels, names: names)
    }

    /// The dataset for `model`: with the files' labels, or, when they have none, the model's predictions on the
    /// clean images as labels (as ART does; `source.labelsArePredictions` records it). Class names must be as
    /// many as the model's classes when they came from the files or were given; `defaultClassNames` of another
    /// count give way to "0", "1", ...
    public func dataset(for model: Classifier, defaultClassNames: [String]) throws -> Dataset {
        try model.checkImages(images)
        let k = model.classCount
        let names: [String]
        if let own = classNames {
            guard own.count == k else {
                let what = source.format == .imageFolder && source.classFolders != nil ? "\(own.count) class folders" : "\(own.count) class names"
                throw AdvKitError.invalidData("\(source.path): \(what), but the model has \(k) classes: the labels would not mean the model's classes (give the model's class names in order, e.g. --classes FILE)")
            }
            names = own
        } else {
            names = defaultClassNames.count == k ? defaultClassNames : (0..<k).map(String.init)
        }
        if let labels { return try finish(labels: labels, names: names) }
        let predictions = model.logits(of: images).argmaxRows().map(Int32.init)
        var d = try finish(labels: predictions, names: names)
        d.source?.labelsArePredictions = true
        return d
    }

    private func finish(labels: [Int32], names: [String]) throws -> Dataset {
        var d = try Dataset(images: images, labels: labels, classNames: names, name: source.path)
        d.source = source
        d.imageNames = imageNames
        return d
    }
}

extension Dataset {
    /// Images from `path` (an image folder, a NumPy .npy or .npz, or an IDX file, told apart by their first bytes)
    /// and labels from `labels` (.npy, .npz or IDX), from the folder names, or from the .npz; without any, the
    /// result has none (see `LoadedImages.dataset(for:defaultClassNames:)`).
    ///
    /// Arrays may be uint8 (0...255, divided by 255; other integer types too when their values fit) or float in
    /// [0, 1] (NaN, infinities and values outside are refused, naming the element), shaped (N, H, W), (N, C, H, W)
    /// or (N, H, W, C) with C = 1 or 3, or (N, C·H·W) when `options.imageShape` is known.
    public static func load(images path: String, labels labelsPath: String? = nil,
                            options: ImageLoadOptions = ImageLoadOptions()) throws -> LoadedImages {
        if let c = options.channels, c != 1 && c != 3 {
            throw AdvKitError.invalidArgument("images convert to 1 (grayscale) or 3 (RGB) channels, not \(c)")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw AdvKitError.io(path: path, reason: "no such file or folder") }
        var loaded: LoadedImages
        if isDir.boolValue {
            let listing = try ImageFolder.list(path, classNames: options.classNames)
            let n = options.limit.map { Swift.min($0, listing.files.count) } ?? listing.files.count
            let x = try ImageFolder.read(path, listing: listing, channels: options.targetChannels, resize: options.resize, limit: n)
            let layout: ArrayLayout = x.shape[1] == 1 ? .nhw : .nhwc
            let names = options.classNames ?? listing.classFolders
            loaded = LoadedImages(images: x, labels: listing.labels.map { Array($0.prefix(n)) }, classNames: names,
                                  imageNames: Array(listing.files.prefix(n)),
                                  source: DataSource(format: .imageFolder, path: path, layout: layout,
                                                     labels: listing.labels == nil ? nil : path + " (class folders)",
                                                     classFolders: listing.classFolders))
        } else {
            let data = try FileIO.read(path)
            if NumPy.isNumPy(data) {
                let a = try NumPy.parse(data, path: path)
                let (x, layout) = try ImageArrays.images(a, path: path, options: options)
                loaded = LoadedImages(images: x, labels: nil, classNames: options.classNames, imageNames: nil,
                                      source: DataSource(format: .npy, path: path, layout: layout))
            } else if NPZ.isZip(data) {
                let archive = try NPZ.Archive(data, path: path)
                let key = try ImageArrays.key(in: archive, given: options.imagesKey, defaults: NPZKeys.images, what: "images")!
                let array = try archive.array(key)
                let (x, layout) = try ImageArrays.images(array, path: "\(path) ['\(key)']", options: options)
                loaded = LoadedImages(images: x, labels: nil, classNames: options.classNames, imageNames: nil,
                                      source: DataSource(format: .npz, path: path, layout: layout))
                if labelsPath == nil, let lk = try ImageArrays.key(in: archive, given: options.labelsKey, defaults: NPZKeys.labels, what: "labels", optional: true) {
                    let y = try ImageArrays.labels(try archive.array(lk), path: "\(path) ['\(lk)']", count: array.shape[0])
                    loaded.labels = Array(y.prefix(x.shape[0]))
                    loaded.source.labels = "\(path) ['\(lk)']"
                }
            } else {
                var x = try IDX.readImages(path)
                let layout: ArrayLayout = x.shape[1] == 1 ? .nhw : .nchw
                if let c = options.targetChannels, c != x.shape[1], x.shape[1] == 1 || x.shape[1] == 3 {
                    x = ImageArrays.convertChannels(x, to: c)
                }
                loaded = LoadedImages(images: x, labels: nil, classNames: options.classNames, imageNames: nil,
                                      source: DataSource(format: .idx, path: path, layout: layout))
            }
            if let limit = options.limit, limit < loaded.count {
                loaded.images = loaded.images.batch(0..<Swift.max(limit, 0))
                loaded.labels = loaded.labels.map { Array($0.prefix(Swift.max(limit, 0))) }
            }
        }
        if let labelsPath {
            var y = try ImageArrays.readLabels(labelsPath, key: options.labelsKey)
            let all = y.count
            if let limit = options.limit, limit < y.count { y = Array(y.prefix(Swift.max(limit, 0))) }
            guard y.count == loaded.count else {
                throw AdvKitError.invalidData("\(labelsPath) has \(all) labels for the \(loaded.count) images of \(path)")
            }
            loaded.labels = y
            loaded.source.labels = labelsPath
        }
        return loaded
    }
}

/// Arrays to images and labels.
enum ImageArrays {
    /// The key to read: the given one (an error listing the keys when absent), else the first default present.
    static func key(in a: NPZ.Archive, given: String?, defaults: [String], what: String, optional: Bool = false) throws -> String? {
        let keys = a.keys
        if let given {
            guard keys.contains(given) else {
                throw AdvKitError.invalidFile(path: a.path, reason: "has no array '\(given)' for the \(what) (it has \(keys.map { "'\($0)'" }.joined(separator: ", ")))")
            }
            return given
        }
        if let k = defaults.first(where: keys.contains) { return k }
        if optional { return nil }
        throw AdvKitError.invalidFile(path: a.path, reason: "has none of the usual \(what) keys (\(defaults.joined(separator: ", "))); it has \(keys.isEmpty ? "no arrays" : keys.map { "'\($0)'" }.joined(separator: ", ")): name the \(what) array (--npz-\(what) KEY)")
    }

    /// (N, C, H, W) in [0, 1] from an array, and the layout it had.
    static func images(_ a: NumPy.Array, path: String, options: ImageLoadOptions) throws -> (Tensor, ArrayLayout) {
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: why) }
        let s = a.shape
        guard a.type != .bool else { throw fail("a bool array, not images (want uint8 0...255 or float in [0, 1])") }
        // Where the channels are: (N, H, W) has none; 4-dimensional arrays have them first or last.
        let layout: ArrayLayout
        var chw: [Int]
        switch s.count {
        case 3:
            layout = .nhw
            chw = [1, s[1], s[2]]
        case 4:
            layout = try resolveLayout(s, path: path, options: options)
            chw = layout == .nchw ? [s[1], s[2], s[3]] : [s[3], s[1], s[2]]
        case 2:
            guard let m = options.imageShape, s[1] == m.count else {
                throw fail("a 2-dimensional array \(NumPy.tuple(s)); images need (N, H, W), (N, C, H, W) or (N, H, W, C)\(options.imageShape.map { " (flat rows are taken when they hold the model's \($0.count) = \($0) values)" } ?? "")")
            }
            layout = .nchw
            chw = m.dims
        default:
            throw fail("a \(s.count)-dimensional array \(NumPy.tuple(s)); images need (N, H, W), (N, C, H, W) or (N, H, W, C)")
        }
        let n = s[0], (c, h, w) = (chw[0], chw[1], chw[2])
        let limit = options.limit.map { Swift.min($0, n) } ?? n
        let d = c * h * w
        // Values: integers are 0...255 pixel values, floats lie in [0, 1].
        let values = a.values
        let scale: Float = a.type.isFloatingPoint ? 1 : 255
        for i in 0..<(limit * d) {
            let v = values[i]
            if a.type.isFloatingPoint {
                guard v >= 0 && v <= 1 else {
                    let what = v.isNaN ? "NaN" : (v.isInfinite ? "infinite" : "\(v)")
                    let hint = v.isFinite && v <= 255 && v > 1 ? " (0-255 values? divide by 255, or save as uint8)" : ""
                    throw fail("image \(i / d) has a pixel that is \(what): float images must lie in [0, 1]\(hint)")
                }
            } else {
                guard v >= 0 && v <= 255 else {
                    throw fail("image \(i / d) has the pixel value \(Int64(v)): integer images must lie in 0...255")
                }
            }
        }
        var out = Tensor(uninitialized: [limit, c, h, w])
        out.withUnsafeMutableBufferPointer { o in
            values.withUnsafeBufferPointer { v in
                if layout == .nhwc {
                    for img in 0..<limit { for y in 0..<h { for x in 0..<w { for ch in 0..<c {
                        o[((img * c + ch) * h + y) * w + x] = v[((img * h + y) * w + x) * c + ch] / scale
                    } } } }
                } else {
                    for i in 0..<(limit * d) { o[i] = v[i] / scale }
                }
            }
        }
        if let target = options.targetChannels, target != c { out = convertChannels(out, to: target) }
        if let r = options.resize, r.height != h || r.width != w {
            let c2 = out.shape[1]
            var resized = Tensor(uninitialized: [limit, c2, r.height, r.width])
            let plane = c2 * h * w, outPlane = c2 * r.height * r.width
            out.withUnsafeBufferPointer { src in
                resized.withUnsafeMutableBufferPointer { dst in
                    for img in 0..<limit {
                        let one = ImageConversion.resize(Array(src[(img * plane)..<((img + 1) * plane)]), channels: c2, height: h, width: w,
                                                         toHeight: r.height, toWidth: r.width)
                        for i in 0..<outPlane { dst[img * outPlane + i] = one[i] }
                    }
                }
            }
            out = resized
        }
        return (out, layout)
    }

    /// The layout of a 4-dimensional array: given, or told by where a channel count (1 or 3) sits, and when both
    /// places could hold one, by the model's image shape.
    static func resolveLayout(_ s: [Int], path: String, options: ImageLoadOptions) throws -> ArrayLayout {
        let first = s[1] == 1 || s[1] == 3, last = s[3] == 1 || s[3] == 3
        if let given = options.layout {
            let c = given == .nchw ? s[1] : s[3]
            guard c == 1 || c == 3 else {
                throw AdvKitError.invalidFile(path: path, reason: "shape \(NumPy.tuple(s)) laid out as \(given.rawValue) has \(c) channels; images have 1 or 3")
            }
            return given == .nchw ? .nchw : .nhwc
        }
        var candidates: [ArrayLayout] = []
        if first { candidates.append(.nchw) }
        if last { candidates.append(.nhwc) }
        if candidates.count == 2, let m = options.imageShape {
            let fits = candidates.filter { l in
                let hw = l == .nchw ? [s[2], s[3]] : [s[1], s[2]]
                return hw == [m[1], m[2]]
            }
            if fits.count == 1 { candidates = fits }
        }
        switch candidates.count {
        case 1: return candidates[0]
        case 0:
            throw AdvKitError.invalidFile(path: path, reason: "shape \(NumPy.tuple(s)) has no channel axis of 1 or 3 (want N,C,H,W or N,H,W,C with C = 1 or 3)")
        default:
            throw AdvKitError.invalidFile(path: path, reason: "shape \(NumPy.tuple(s)) could be N,C,H,W or N,H,W,C: name the layout (--data-layout nchw or nhwc)")
        }
    }

    /// (N, C, H, W) converted between 1 and 3 channels.
    static func convertChannels(_ x: Tensor, to c: Int) -> Tensor {
        let (n, from, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        precondition((from == 1 || from == 3) && (c == 1 || c == 3), "channels convert between 1 and 3")
        var out = Tensor(uninitialized: [n, c, h, w])
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for img in 0..<n {
                    let one = ImageConversion.convertChannels(Array(src[(img * from * h * w)..<((img + 1) * from * h * w)]), from: from, to: c, hw: h * w)
                    for i in 0..<one.count { dst[img * c * h * w + i] = one[i] }
                }
            }
        }
        return out
    }

    /// Labels from a .npy, .npz or IDX file.
    static func readLabels(_ path: String, key labelsKey: String?) throws -> [Int32] {
        let data = try FileIO.read(path)
        if NumPy.isNumPy(data) {
            return try labels(try NumPy.parse(data, path: path), path: path, count: nil)
        }
        if NPZ.isZip(data) {
            let a = try NPZ.Archive(data, path: path)
            let k = try key(in: a, given: labelsKey, defaults: NPZKeys.labels, what: "labels")!
            return try labels(try a.array(k), path: "\(path) ['\(k)']", count: nil)
        }
        return try IDX.readLabels(path)
    }

    /// Class indices from an array: (N,), (N, 1), or one-hot (N, K); integral values in [0, 65536).
    static func labels(_ a: NumPy.Array, path: String, count: Int?) throws -> [Int32] {
        func fail(_ why: String) -> AdvKitError { .invalidFile(path: path, reason: why) }
        let s = a.shape
        var out: [Int32] = []
        if s.count == 1 || (s.count == 2 && s[1] == 1) {
            out.reserveCapacity(s[0])
            for (i, v) in a.values.enumerated() {
                guard v >= 0, v < 65_536, v == v.rounded() else { throw fail("label \(i) is \(v), not a class index") }
                out.append(Int32(v))
            }
        } else if s.count == 2 {
            let k = s[1]
            for i in 0..<s[0] {
                let row = a.values[(i * k)..<((i + 1) * k)]
                guard row.allSatisfy({ $0 == 0 || $0 == 1 }), row.filter({ $0 == 1 }).count == 1 else {
                    throw fail("labels of shape \(NumPy.tuple(s)) are taken as one-hot rows, but row \(i) is not one-hot (one 1, the rest 0)")
                }
                out.append(Int32(row.firstIndex(of: 1)! - row.startIndex))
            }
        } else {
            throw fail("labels of shape \(NumPy.tuple(s)); want (N,), (N, 1) or one-hot (N, K)")
        }
        if let count, out.count != count { throw fail("\(out.count) labels for \(count) images") }
        return out
    }
}
