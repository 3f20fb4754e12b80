import Foundation

/// A folder of PNG and JPEG images, in torchvision's ImageFolder layout (one subfolder per class, the classes in
/// the sorted order of the folder names, images found recursively inside each) or flat (no subfolders: unlabeled
/// images, in the sorted order of their names). Names sort by Unicode code points, as Python's `sorted` does, so
/// that the class indices are those a PyTorch model trained on the same folder uses.
public enum ImageFolder {
    /// File name extensions taken as images (any case); other files are skipped, as are hidden ones.
    public static let extensions: Set<String> = ["png", "jpg", "jpeg"]

    /// What a folder holds.
    public struct Listing: Equatable {
        /// Image files relative to the folder ("Coat/0001.png"), in reading order.
        public var files: [String]
        /// The class folders in sorted order (every one, also those without images); nil for a flat folder.
        public var classFolders: [String]?
        /// Each file's class index (its folder's place in `classFolders`, or in `classNames` when given).
        public var labels: [Int32]?
    }

    /// Lists `directory`. With `classNames`, each class folder must be one of them and its label is its place in
    /// that list (a model's own class order); otherwise labels follow the sorted folder names.
    public static func list(_ directory: String, classNames: [String]? = nil) throws -> Listing {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDir) else { throw AdvKitError.io(path: directory, reason: "no such folder") }
        guard isDir.boolValue else { throw AdvKitError.io(path: directory, reason: "is a file, not a folder of images") }
        let entries = try contents(directory)
        let subfolders = entries.filter { isDirectory(directory + "/" + $0) }
        let images = entries.filter { !isDirectory(directory + "/" + $0) && isImageName($0) }
        if subfolders.isEmpty {
            guard !images.isEmpty else {
                throw AdvKitError.invalidFile(path: directory, reason: "has no PNG or JPEG files (.png, .jpg, .jpeg) and no class subfolders")
            }
            return Listing(files: images, classFolders: nil, labels: nil)
        }
        if let stray = images.first {
            throw AdvKitError.invalidFile(path: directory, reason: "has image files (\(stray)) beside class subfolders (\(subfolders[0])): put every image in its class folder, or use a flat folder of images")
        }
        var files: [String] = [], labels: [Int32] = []
        for (k, folder) in subfolders.enumerated() {
            let label: Int
            if let classNames {
                guard let i = classNames.firstIndex(of: folder) else {
                    throw AdvKitError.invalidFile(path: directory + "/" + folder, reason: "the class folder '\(folder)' is not one of the \(classNames.count) class names given (\(classNames.prefix(5).joined(separator: ", "))\(classNames.count > 5 ? ", ..." : ""))")
                }
                label = i
            } else {
                label = k
            }
            let found = try walk(directory + "/" + folder, relative: folder, depth: 0)
            files += found
            labels += [Int32](repeating: Int32(label), count: found.count)
        }
        guard !files.isEmpty else {
            throw AdvKitError.invalidFile(path: directory, reason: "its \(subfolders.count) class folders hold no PNG or JPEG files")
        }
        return Listing(files: files, classFolders: subfolders, labels: labels)
    }

    /// Image files under `path`, relative to the listed folder, in the order of Python's sorted(os.walk(...)):
    /// folders by path, files by name within each.
    private static func walk(_ path: String, relative: String, depth: Int) throws -> [String] {
        guard depth < 32 else { throw AdvKitError.invalidFile(path: path, reason: "folders nest more than 32 deep (a symbolic link loop?)") }
        var roots: [(String, [String])] = []
        func visit(_ p: String, _ rel: String, _ d: Int) throws {
            guard d < 32 else { throw AdvKitError.invalidFile(path: p, reason: "folders nest more than 32 deep (a symbolic link loop?)") }
            let entries = try contents(p)
            roots.append((rel, entries.filter { !isDirectory(p + "/" + $0) && isImageName($0) }))
            for sub in entries where isDirectory(p + "/" + sub) { try visit(p + "/" + sub, rel + "/" + sub, d + 1) }
        }
        try visit(path, relative, depth)
        roots.sort { pythonOrder($0.0, $1.0) }
        return roots.flatMap { root in root.1.map { root.0 + "/" + $0 } }
    }

    private static func contents(_ path: String) throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }.sorted(by: pythonOrder)
        } catch {
            throw AdvKitError.io(path: path, reason: "cannot list the folder (permissions?)")
        }
    }

    private static func isDirectory(_ path: String) -> Bool {
        var d: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &d) && d.boolValue
    }

    static func isImageName(_ name: String) -> Bool {
        extensions.contains(URL(fileURLWithPath: name).pathExtension.lowercased())
    }

    /// Python's string order: by Unicode code points.
    static func pythonOrder(_ a: String, _ b: String) -> Bool {
        a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value }
    }

    /// Reads the folder's images as (N, C, H, W) in [0, 1]. Gray and RGB files are converted to `channels` (nil:
    /// 3 when any file is RGB, else 1); files of another size than the first are an error naming them unless
    /// `resize` (height, width) is given, which resizes every image (Pillow's antialiased bilinear filter).
    public static func read(_ directory: String, listing: Listing, channels: Int? = nil,
                            resize: (height: Int, width: Int)? = nil, limit: Int? = nil) throws -> Tensor {
        precondition(channels == nil || channels == 1 || channels == 3, "channels must be 1 or 3")
        let files = limit.map { Array(listing.files.prefix(Swift.max($0, 0))) } ?? listing.files
        var decoded: [ImageDecoding.Image] = []
        decoded.reserveCapacity(files.count)
        for (i, f) in files.enumerated() {
            let img = try ImageDecoding.read(directory + "/" + f)
            if resize == nil, i > 0, img.width != decoded[0].width || img.height != decoded[0].height {
                throw AdvKitError.invalidFile(path: directory + "/" + f, reason: "is \(img.width)x\(img.height) (width x height) but \(files[0]), the first image of the folder, is \(decoded[0].width)x\(decoded[0].height): the images must share one size, or be resized to one (--resize HxW)")
            }
            decoded.append(img)
        }
        let c = channels ?? (decoded.contains { $0.channels == 3 } ? 3 : 1)
        let h = resize?.height ?? decoded.first?.height ?? 0, w = resize?.width ?? decoded.first?.width ?? 0
        var out = Tensor(uninitialized: [decoded.count, c, h, w])
        out.withUnsafeMutableBufferPointer { o in
            for (n, img) in decoded.enumerated() {
                var planes = ImageConversion.planes(img, channels: c)
                if img.height != h || img.width != w {
                    planes = ImageConversion.resize(planes, channels: c, height: img.height, width: img.width, toHeight: h, toWidth: w)
                }
                for i in 0..<planes.count { o[n * c * h * w + i] = planes[i] }
            }
        }
        return out
    }

    /// Writes one 8-bit PNG per image of `images` (N, C, H, W) with C = 1 or 3, values in [0, 1] rounded to k/255,
    /// at `names` (relative paths: a name ending in another extension gets ".png" in its place), creating the
    /// subfolders and every folder of `emptyFolders` (class folders that have no image, so that the written folder
    /// lists the same classes as the one read). Each file is written atomically.
    public static func write(_ images: Tensor, names: [String], to directory: String, emptyFolders: [String] = []) throws {
        precondition(images.shape.rank == 4 && names.count == images.shape[0], "\(names.count) names for images of shape \(images.shape)")
        let c = images.shape[1]
        guard c == 1 || c == 3 else { throw AdvKitError.invalidData("PNG files hold 1 or 3 channels; these images have \(c)") }
        let fm = FileManager.default
        func create(_ dir: String) throws {
            do { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw AdvKitError.io(path: dir, reason: "cannot create the folder (\(error.localizedDescription))")
            }
        }
        try create(directory)
        for folder in emptyFolders {
            try checkRelative(folder)
            try create(directory + "/" + folder)
        }
        let outNames = pngNames(names)
        guard Set(outNames).count == outNames.count else { throw AdvKitError.invalidArgument("two images would be written to the same file name") }
        for (i, name) in names.enumerated() {
            try checkRelative(name)
            let out = outNames[i]
            let path = directory + "/" + out
            try create(URL(fileURLWithPath: path).deletingLastPathComponent().path)
            try FileIO.writeAtomically(PNG.encode(PNG.image(images, index: i)), to: path)
        }
    }

    /// The PNG names `write` uses for `names`.
    public static func pngNames(_ names: [String]) -> [String] {
        var used = Set<String>()
        return names.map { name in
            var out = URL(fileURLWithPath: name).pathExtension.lowercased() == "png" ? name : (name as NSString).deletingPathExtension + ".png"
            if used.contains(out) { out = name + ".png" }
            used.insert(out)
            return out
        }
    }

    private static func checkRelative(_ name: String) throws {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !name.isEmpty, !name.hasPrefix("/"), !parts.contains(where: { $0 == ".." || $0.isEmpty }) else {
            throw AdvKitError.invalidArgument("the image name '\(name)' is not a plain relative path inside the output folder")
        }
    }
}

/// Pixel conversions shared by the image readers: channels and size.
@_spi(Support) public enum ImageConversion {
    /// One decoded image as (C, H, W) floats in [0, 1], converted to `channels`: gray is repeated into R, G and B;
    /// RGB becomes gray by ITU-R 601-2 luma, L = (299 R + 587 G + 114 B) / 1000, in Pillow's fixed-point form for
    /// 8-bit images (so that AdvKit and Pillow's convert("L") give the same pixels).
    public static func planes(_ img: ImageDecoding.Image, channels c: Int) -> [Float] {
        let hw = img.width * img.height, s = img.samples, m = img.maxValue
        var out = [Float](repeating: 0, count: c * hw)
        switch (img.channels, c) {
        case (1, 1):
            for i in 0..<hw { out[i] = Float(s[i]) / m }
        case (1, _):
            for i in 0..<hw { let v = Float(s[i]) / m; for ch in 0..<c { out[ch * hw + i] = v } }
        case (3, 3):
            for i in 0..<hw { for ch in 0..<3 { out[ch * hw + i] = Float(s[3 * i + ch]) / m } }
        default:  // RGB to gray
            for i in 0..<hw {
                let r = UInt32(s[3 * i]), g = UInt32(s[3 * i + 1]), b = UInt32(s[3 * i + 2])
                if img.depth == 8 {
                    out[i] = Float((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) / 255
                } else {
                    out[i] = (0.299 * Float(r) + 0.587 * Float(g) + 0.114 * Float(b)) / m
                }
            }
        }
        return out
    }

    /// (C, H, W) planes converted from `from` channels to `to` (1 or 3), floats in [0, 1].
    public static func convertChannels(_ x: [Float], from: Int, to: Int, hw: Int) -> [Float] {
        if from == to { return x }
        var out = [Float](repeating: 0, count: to * hw)
        if from == 1 {
            for ch in 0..<to { for i in 0..<hw { out[ch * hw + i] = x[i] } }
        } else {
            for i in 0..<hw { out[i] = 0.299 * x[i] + 0.587 * x[hw + i] + 0.114 * x[2 * hw + i] }
        }
        return out
    }

    /// Resizes (C, H, W) planes with a separable triangle filter whose support grows with the reduction (Pillow's
    /// BILINEAR resampling: antialiased when shrinking, plain bilinear interpolation when enlarging), pixel
    /// centres aligned.
    public static func resize(_ x: [Float], channels c: Int, height h: Int, width w: Int, toHeight oh: Int, toWidth ow: Int) -> [Float] {
        let wx = weights(from: w, to: ow), wy = weights(from: h, to: oh)
        var tmp = [Float](repeating: 0, count: c * h * ow), out = [Float](repeating: 0, count: c * oh * ow)
        for ch in 0..<c { for y in 0..<h { for o in 0..<ow {
            var s: Float = 0
            for (k, v) in wx[o].weights.enumerated() { s += v * x[(ch * h + y) * w + wx[o].start + k] }
            tmp[(ch * h + y) * ow + o] = s
        } } }
        for ch in 0..<c { for o in 0..<oh { for xx in 0..<ow {
            var s: Float = 0
            for (k, v) in wy[o].weights.enumerated() { s += v * tmp[(ch * h + wy[o].start + k) * ow + xx] }
            out[(ch * oh + o) * ow + xx] = Swift.min(Swift.max(s, 0), 1)
        } } }
        return out
    }

    private static func weights(from n: Int, to m: Int) -> [(start: Int, weights: [Float])] {
        let scale = Double(n) / Double(m), filterScale = Swift.max(scale, 1), support = filterScale
        return (0..<m).map { o in
            let centre = (Double(o) + 0.5) * scale
            let lo = Swift.max(0, Int((centre - support + 0.5).rounded(.down)))
            let hi = Swift.min(n, Int((centre + support + 0.5).rounded(.down)))
            var ws = (lo..<Swift.max(hi, lo + 1)).map { i in Swift.max(0, 1 - abs((Double(i) - centre + 0.5) / filterScale)) }
            let total = ws.reduce(0, +)
            if total > 0 { ws = ws.map { $0 / total } } else { ws = [Double](repeating: 1 / Double(ws.count), count: ws.count) }
            return (Swift.min(lo, n - 1), ws.map(Float.init))
        }
    }
}
