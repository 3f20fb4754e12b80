import Foundation

/// CIFAR-10's binary version: records of 1 label byte and 3072 pixel bytes (1024 red, 1024 green, 1024 blue,
/// each 32×32 row-major), 10,000 records per batch file.
public enum CIFAR10 {
    public static let recordSize = 1 + 3 * 32 * 32

    /// Parses one batch file's bytes.
    public static func parse(_ data: Data, path: String = "<data>") throws -> Dataset {
        guard !data.isEmpty else { throw AdvKitError.invalidFile(path: path, reason: "empty file, not a CIFAR-10 batch") }
        guard data.count % recordSize == 0 else {
            throw AdvKitError.invalidFile(path: path, reason: "\(data.count) bytes is not a whole number of CIFAR-10 records of \(recordSize) bytes (truncated or not a CIFAR-10 binary batch)")
        }
        let n = data.count / recordSize
        var labels = [Int32](repeating: 0, count: n)
        var images = Tensor(uninitialized: [n, 3, 32, 32])
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let b = raw.bindMemory(to: UInt8.self)
            try images.withUnsafeMutableBufferPointer { out in
                for i in 0..<n {
                    let rec = i * recordSize
                    guard b[rec] < 10 else {
                        throw AdvKitError.invalidFile(path: path, reason: "record \(i) has label \(b[rec]), CIFAR-10 labels are 0...9")
                    }
                    labels[i] = Int32(b[rec])
                    for j in 0..<(recordSize - 1) { out[i * 3072 + j] = Float(b[rec + 1 + j]) / 255 }
                }
            }
        }
        return try Dataset(images: images, labels: labels, classNames: Dataset.cifar10Classes, name: path)
    }

    public static func read(_ path: String) throws -> Dataset { try parse(try FileIO.read(path), path: path) }

    /// The training split (data_batch_1.bin ... data_batch_5.bin, whichever exist, at least one) or the test
    /// split (test_batch.bin) from `directory`.
    public static func load(directory: String, split: Dataset.Split) throws -> Dataset {
        let files = split == .test ? ["test_batch.bin"] : (1...5).map { "data_batch_\($0).bin" }
        let present = files.map { directory + "/" + $0 }.filter { FileManager.default.fileExists(atPath: $0) }
        guard !present.isEmpty else {
            throw AdvKitError.io(path: directory + "/" + files[0], reason: "no such file (want CIFAR-10's binary version: \(files.joined(separator: ", ")))")
        }
        let parts = try present.map(read)
        var d = parts[0]
        if parts.count > 1 {
            d.images = Tensor.concatenate(parts.map(\.images))
            d.labels = parts.flatMap(\.labels)
        }
        d.name = "cifar10 \(split.rawValue)"
        return d
    }
}
