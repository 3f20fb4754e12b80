import Foundation

/// A user's model for `Evaluator`: what results.json records of it, how to load a fresh copy (the undefended
/// model, and the start of each fine-tuning), and how to write a hardened copy back in the user's format.
public struct UserModel {
    public var record: EvaluatedModel
    /// A fresh copy with the file's weights.
    public var load: () throws -> TrainableClassifier
    /// Writes a fine-tuned copy in the user's format to the path given (which ends in `fileExtension`).
    public var export: (TrainableClassifier, String) throws -> Void
    /// "onnx" or "safetensors".
    public var fileExtension: String

    public init(record: EvaluatedModel, fileExtension: String, load: @escaping () throws -> TrainableClassifier,
                export: @escaping (TrainableClassifier, String) throws -> Void) {
        (self.record, self.fileExtension, self.load, self.export) = (record, fileExtension, load, export)
    }

    /// An ONNX file (any exported classifier; `options` as `ONNXClassifier` takes them). Hardened copies are written
    /// as ONNX with the same graph and the fine-tuned initializers (`ONNXClassifier.writeONNX`).
    public static func onnx(_ path: String, options: ONNXInputOptions = ONNXInputOptions()) throws -> UserModel {
        let first = try ONNXClassifier(contentsOf: path, options: options)
        let m = first.model
        var pre: [String] = []
        if options.inputScale != 1 { pre.append("scale \(options.inputScale)") }
        if let mean = options.mean { pre.append("mean \(mean.map { "\($0)" }.joined(separator: ","))") }
        if let std = options.std { pre.append("std \(std.map { "\($0)" }.joined(separator: ","))") }
        let record = EvaluatedModel(file: path, sha256: try SHA256.hex(ofFile: path), format: "onnx", inputShape: first.inputShape.dims,
                                    opsets: m.opsetImports, producer: [m.producerName, m.producerVersion].filter { !$0.isEmpty }.joined(separator: " "),
                                    operators: Array(Set(m.graph.nodes.map(\.opType))).sorted(),
                                    preprocessing: pre.isEmpty ? nil : pre.joined(separator: ", "))
        var handed = false
        return UserModel(record: record, fileExtension: "onnx", load: {
            // The first copy was read to describe the file: hand it out once rather than parse the file again.
            if !handed { handed = true; return first }
            return try ONNXClassifier(contentsOf: path, options: options)
        }, export: { model, out in
            guard let onnx = model as? ONNXClassifier else { throw AdvKitError.invalidArgument("not an ONNX model: cannot write \(out)") }
            try onnx.writeONNX(to: out)
        })
    }

    /// Safetensors weights of a built-in architecture (PyTorch's names), sized to `inputShape` and `classes`.
    public static func safetensors(_ path: String, architecture: Architecture, activation: Activation = .relu,
                                   inputShape: Shape, classes: Int) throws -> UserModel {
        try Model.validate(architecture, inputShape: inputShape, classes: classes)
        func make() throws -> TrainableClassifier {
            let m = Model(architecture, inputShape: inputShape, classes: classes, activation: activation, seed: 0)
            try m.load(from: path)
            return m
        }
        _ = try make()
        let record = EvaluatedModel(file: path, sha256: try SHA256.hex(ofFile: path), format: "safetensors",
                                    architecture: architecture.rawValue, inputShape: inputShape.dims)
        return UserModel(record: record, fileExtension: "safetensors", load: make, export: { model, out in
            try model.save(to: out, metadata: ["advkit": AdvKitVersion.string, "fine-tuned from": path])
        })
    }
}
