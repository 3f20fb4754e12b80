import Foundation

// The model structures an ONNX file is read into (Sources/AdvKit/ONNX/ONNXReader.swift reads them; the graph
// executor runs them). Field meanings follow onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto,
// TensorProto, ValueInfoProto); only what an image classifier needs is kept.

/// An ONNX element type (TensorProto.DataType). Codes not listed here (complex, 8-bit and 4-bit floats, 4-bit and
/// 2-bit integers) are refused with an error when a tensor uses them, and read as `nil` in a declared input/output.
public enum ONNXDataType: Int, Sendable, CaseIterable, CustomStringConvertible {
    case float = 1, uint8 = 2, int8 = 3, uint16 = 4, int16 = 5, int32 = 6, int64 = 7, string = 8, bool = 9,
         float16 = 10, double = 11, uint32 = 12, uint64 = 13, bfloat16 = 16

    /// The name onnx.proto gives the type, in lower case ("float", "int64", "bfloat16").
    public var description: String {
        switch self {
        case .float: return "float"
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .int32: return "int32"
        case .int64: return "int64"
        case .string: return "string"
        case .bool: return "bool"
        case .float16: return "float16"
        case .double: return "double"
        case .uint32: return "uint32"
        case .uint64: return "uint64"
        case .bfloat16: return "bfloat16"
        }
    }

    /// Bytes per element in raw_data (nil for string, which has no fixed width).
    public var byteWidth: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16, .float16, .bfloat16: return 2
        case .float, .int32, .uint32: return 4
        case .int64, .double, .uint64: return 8
        case .string: return nil
        }
    }

    /// Float, double, float16 and bfloat16: read as Float32. Every other readable type is read as Int64.
    public var isFloatingPoint: Bool { self == .float || self == .double || self == .float16 || self == .bfloat16 }
}

/// A tensor from the file: floating types (float, double, float16, bfloat16) converted to Float32; integer and bool
/// types to Int64 (bool as 0 or 1). `dims` may be empty (a scalar).
///
/// AdvKit's `Tensor` holds at most `Shape.maxRank` (4) dimensions: a floating tensor of higher rank is stored flat
/// (shape `[count]`), and `dims` keeps its true dimensions. For rank <= 4 the tensor's shape equals `dims`.
public struct ONNXTensor: Sendable, Equatable {
    public var name: String
    public var dataType: ONNXDataType
    public var dims: [Int]
    public enum Values: Sendable, Equatable {
        /// Shape `dims` (`[]` is `Shape.scalar`), or `[count]` when `dims` has more than 4 entries.
        case float(Tensor)
        case int([Int64])
    }
    public var values: Values

    public init(name: String, dataType: ONNXDataType, dims: [Int], values: Values) {
        self.name = name
        self.dataType = dataType
        self.dims = dims
        self.values = values
    }

    /// Number of elements (the product of `dims`; 1 for a scalar).
    public var count: Int { dims.reduce(1, *) }

    /// The elements as Float (integers converted), in row-major order.
    public var floats: [Float] {
        switch values {
        case let .float(t): return t.scalars
        case let .int(v): return v.map { Float($0) }
        }
    }

    /// The elements as Int64 (floats truncated toward zero; NaN and out-of-range values clamp), in row-major order.
    public var ints: [Int64] {
        switch values {
        case let .int(v): return v
        case let .float(t):
            return t.scalars.map { f in
                if f.isNaN { return 0 }
                if f >= 9.2e18 { return Int64.max }
                if f <= -9.2e18 { return Int64.min }
                return Int64(f)
            }
        }
    }
}

/// A node attribute (AttributeProto). Graphs, sparse tensors, lists of tensors and type protos are kept only as
/// `.unsupported(type:)` with AttributeProto's type code (5 graph, 9 tensors, 10 graphs, 11 sparse tensor,
/// 12 sparse tensors, 13 type proto, 14 type protos; 0 when the type is missing and no value is set).
public enum ONNXAttribute: Sendable, Equatable {
    case float(Float)
    case int(Int)
    case string(String)
    case tensor(ONNXTensor)
    case floats([Float])
    case ints([Int])
    case strings([String])
    case unsupported(type: Int)
}

/// One operator application (NodeProto).
public struct ONNXNode: Sendable, Equatable {
    public var name: String
    public var opType: String
    /// "" (or "ai.onnx") is the standard operator set.
    public var domain: String
    /// Value names; "" is an optional input left out.
    public var inputs: [String]
    public var outputs: [String]
    public var attributes: [String: ONNXAttribute]

    public init(name: String, opType: String, domain: String, inputs: [String], outputs: [String],
                attributes: [String: ONNXAttribute]) {
        self.name = name
        self.opType = opType
        self.domain = domain
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
    }
}

/// A declared graph input or output (ValueInfoProto): name, element type, and dims where each dim is a fixed size
/// or a symbolic name.
public struct ONNXValueInfo: Sendable, Equatable {
    public var name: String
    /// nil when the value is not a tensor (a sequence, a map) or its element type is not one AdvKit reads.
    public var elementType: ONNXDataType?
    public enum Dim: Sendable, Equatable, CustomStringConvertible {
        case fixed(Int)
        case symbolic(String)
        /// Neither a size nor a name (or a negative size, which some writers use for "unknown").
        case unknown

        public var description: String {
            switch self {
            case let .fixed(n): return String(n)
            case let .symbolic(s): return s
            case .unknown: return "?"
            }
        }
    }
    /// nil: no shape given (any rank).
    public var dims: [Dim]?

    public init(name: String, elementType: ONNXDataType?, dims: [Dim]?) {
        self.name = name
        self.elementType = elementType
        self.dims = dims
    }

    /// "float [N, 3, 224, 224]", "float (no shape)", "(not a tensor)".
    public var typeDescription: String {
        let type = elementType.map { $0.description } ?? "(not a tensor of a type AdvKit reads)"
        guard let dims else { return type + " (no shape)" }
        return type + " [" + dims.map(\.description).joined(separator: ", ") + "]"
    }
}

/// The computation (GraphProto): nodes in topological order, constant tensors, declared inputs and outputs.
public struct ONNXGraph: Sendable, Equatable {
    public var name: String
    public var nodes: [ONNXNode]
    /// By name. (A graph with a sparse_initializer is refused with an error.)
    public var initializers: [String: ONNXTensor]
    /// As declared, INCLUDING inputs that are also initializers (old exporters list weights as inputs).
    public var inputs: [ONNXValueInfo]
    public var outputs: [ONNXValueInfo]

    public init(name: String, nodes: [ONNXNode], initializers: [String: ONNXTensor], inputs: [ONNXValueInfo],
                outputs: [ONNXValueInfo]) {
        self.name = name
        self.nodes = nodes
        self.initializers = initializers
        self.inputs = inputs
        self.outputs = outputs
    }

    /// Every operator type the graph uses ("Conv", "Relu", ...).
    public var opTypes: Set<String> { Set(nodes.map(\.opType)) }

    /// The declared inputs that are not initializers: what the caller feeds (usually one image batch).
    public var dataInputs: [ONNXValueInfo] { inputs.filter { initializers[$0.name] == nil } }
}

/// A whole ONNX file (ModelProto).
public struct ONNXModel: Sendable, Equatable {
    public var irVersion: Int
    public var producerName: String
    public var producerVersion: String
    /// Domain ("" = ai.onnx) -> operator set version.
    public var opsetImports: [String: Int]
    public var graph: ONNXGraph

    public init(irVersion: Int, producerName: String, producerVersion: String, opsetImports: [String: Int],
                graph: ONNXGraph) {
        self.irVersion = irVersion
        self.producerName = producerName
        self.producerVersion = producerVersion
        self.opsetImports = opsetImports
        self.graph = graph
    }

    /// Every operator type the graph uses.
    public var opTypes: Set<String> { graph.opTypes }

    /// A few lines for messages: producer, IR version and opsets, node and initializer counts, the operator
    /// types, and the data inputs and outputs with their shapes.
    ///
    /// ```
    /// ONNX model by pytorch 2.5.1, IR version 8, opsets ai.onnx 17
    /// graph main_graph: 12 nodes, 8 initializers; operators: Conv, Flatten, Gemm, MaxPool, Relu
    /// input  input: float [N, 1, 28, 28]
    /// output logits: float [N, 10]
    /// ```
    public var summary: String {
        let producer = producerName.isEmpty ? "an unnamed producer" : producerName
            + (producerVersion.isEmpty ? "" : " " + producerVersion)
        let opsets = opsetImports.sorted { $0.key < $1.key }
            .map { ($0.key.isEmpty ? "ai.onnx" : $0.key) + " " + String($0.value) }.joined(separator: ", ")
        var lines = ["ONNX model by \(producer), IR version \(irVersion), opsets \(opsets.isEmpty ? "(none)" : opsets)"]
        lines.append("graph \(graph.name.isEmpty ? "(unnamed)" : graph.name): \(graph.nodes.count) nodes, "
                     + "\(graph.initializers.count) initializers; operators: \(opTypes.sorted().joined(separator: ", "))")
        for v in graph.dataInputs { lines.append("input  \(v.name): \(v.typeDescription)") }
        for v in graph.outputs { lines.append("output \(v.name): \(v.typeDescription)") }
        return lines.joined(separator: "\n")
    }
}
