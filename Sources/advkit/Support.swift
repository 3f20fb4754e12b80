@_spi(Support) import AdvKit
import ArgumentParser
import Foundation

/// Runs a command body, turning every error into a one-line message and a non-zero exit: AdvKit's errors as they
/// are, Foundation's and POSIX errors in words (never `Error Domain=NSCocoaErrorDomain Code=516 ...`).
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as AdvKitError {
        throw ValidationFailure(message: e.description)
    } catch let e as ValidationError {
        throw e
    } catch let e as ValidationFailure {
        throw e
    } catch {
        throw ValidationFailure(message: describe(error))
    }
}

struct ValidationFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension ValidationFailure: LocalizedError {
    var errorDescription: String? { description }
}

/// One line for any error: Foundation's file errors by what happened and to which path.
func describe(_ error: Error) -> String {
    if let e = error as? AdvKitError { return e.description }
    let ns = error as NSError
    let path = (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
    let prefix = path.map { "\($0): " } ?? ""
    if ns.domain == NSCocoaErrorDomain {
        switch CocoaError.Code(rawValue: ns.code) {
        case .fileWriteFileExists: return prefix + "already exists"
        case .fileNoSuchFile, .fileReadNoSuchFile: return prefix + "no such file or folder"
        case .fileWriteNoPermission, .fileReadNoPermission: return prefix + "permission denied"
        case .fileWriteOutOfSpace: return prefix + "no space left on the device"
        case .fileWriteVolumeReadOnly: return prefix + "the file system is read-only"
        default: break
        }
    }
    if ns.domain == NSPOSIXErrorDomain, let c = POSIXErrorCode(rawValue: Int32(ns.code)) {
        return prefix + String(cString: strerror(c.rawValue))
    }
    let text = ns.localizedDescription.replacingOccurrences(of: "\n", with: " ")
    return prefix + text
}

/// A pixel-unit amount as the field writes it: a decimal (0.031) or a fraction of integers (8/255). Options take it
/// with `transform: PixelAmount.argument`, so that a bad value gets this type's message.
struct PixelAmount: CustomStringConvertible {
    let value: Float
    let text: String

    static func argument(_ s: String) throws -> PixelAmount { PixelAmount(value: try parse(s), text: s) }

    init(value: Float, text: String) {
        self.value = value
        self.text = text
    }

    init(_ value: Float) {
        self.value = value
        text = String(describing: value)
    }

    var description: String { text }

    /// "0.1", "8/255", "1e-2"; a finite number, or a clear error naming the text.
    static func parse(_ s: String) throws -> Float {
        let t = s.trimmingCharacters(in: .whitespaces)
        let parts = t.split(separator: "/", omittingEmptySubsequences: false)
        let value: Double?
        switch parts.count {
        case 1: value = Double(t)
        case 2:
            if let a = Double(parts[0].trimmingCharacters(in: .whitespaces)),
               let b = Double(parts[1].trimmingCharacters(in: .whitespaces)), b != 0 {
                value = a / b
            } else {
                value = nil
            }
        default: value = nil
        }
        guard let v = value, v.isFinite else {
            throw ValidationError("'\(s)' is not a number or a fraction such as 0.03 or 8/255")
        }
        return Float(v)
    }

    /// A comma-separated list ("0,2/255,4/255,0.1").
    static func parseList(_ s: String, option: String) throws -> [Float] {
        try s.split(separator: ",").map {
            do { return try parse(String($0)) } catch { throw AdvKitError.invalidArgument("\(option): '\($0)' is not a number or a fraction such as 0.03 or 8/255") }
        }
    }
}

/// Checks an output path before any work starts, so a long run never ends in "cannot write".
enum OutputPath {
    /// `path` will be written as a file: it must not be a folder, and its folder must exist.
    static func checkFile(_ path: String, option: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            throw AdvKitError.invalidArgument("\(option) \(path) is a folder; give a file name")
        }
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw AdvKitError.invalidArgument("\(option) \(path): the folder \(dir) does not exist")
        }
        guard FileManager.default.isWritableFile(atPath: dir) else {
            throw AdvKitError.invalidArgument("\(option) \(path): the folder \(dir) is not writable")
        }
    }

    /// `path` will be a folder of outputs: it must not be a file, and it or its parent must exist.
    static func checkDirectory(_ path: String, option: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw AdvKitError.invalidArgument("\(option) \(path) is a file; give a folder (it is created if missing)") }
            guard FileManager.default.isWritableFile(atPath: path) else { throw AdvKitError.invalidArgument("\(option) \(path) is not writable") }
            return
        }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDir), isDir.boolValue else {
            throw AdvKitError.invalidArgument("\(option) \(path): the folder \(parent) does not exist")
        }
    }
}

/// Writes a JSON object atomically (sorted keys, pretty-printed).
func writeJSON(_ object: [String: Any], to path: String) throws {
    try FileIO.writeAtomically(try JSONText.data(object), to: path)
}

/// JSON text for the values the commands record: dictionaries with String keys (written with sorted keys, at
/// every level), arrays, String, Bool, integers, Double and Float, NSNull and nil Optionals (null). Pretty-printed
/// as JSONSerialization's `.prettyPrinted` does (two spaces, `"key" : value`); slashes are not escaped.
///
/// JSONSerialization took 0.15-0.25 s of `advkit attack`'s run for the per-image records of 1,024 images
/// (swift-corelibs-foundation; measured on this machine under load); this writer takes milliseconds.
/// Numbers: a Double as its shortest round-trip text (Swift's `description`), a Float as its own (the text
/// JSONEncoder writes for it), integral values without ".0" (as JSONSerialization and JSONEncoder write them).
/// NaN and infinities throw, as JSONSerialization does.
enum JSONText {
    struct InvalidValue: Error, CustomStringConvertible {
        let description: String
    }

    static func data(_ object: Any) throws -> Data {
        var out = ""
        out.reserveCapacity(1 << 16)
        try write(object, into: &out, indent: 0)
        return Data(out.utf8)
    }

    private static func write(_ value: Any, into out: inout String, indent: Int) throws {
        guard let value = unwrapped(value) else { out += "null"; return }
        // NSNull last: testing a Swift value against a class first bridges it to Foundation (a dictionary to an
        // NSDictionary, a String to an NSString), which took ~80 ms of `advkit attack`'s 1,024 per-image records.
        switch value {
        case let b as Bool: out += b ? "true" : "false"
        case let s as String: string(s, into: &out)
        case let i as Int: out += String(i)
        case let i as Int32: out += String(i)
        case let i as Int64: out += String(i)
        case let i as UInt64: out += String(i)
        case let i as UInt32: out += String(i)
        case let d as Double: try number(d, text: d.description, into: &out)
        case let f as Float: try number(Double(f), text: f.description, into: &out)
        case let dict as [String: Any]:
            if dict.isEmpty { out += "{}"; return }
            out += "{\n"
            for (k, key) in dict.keys.sorted().enumerated() {
                out += spaces(indent + 2)
                string(key, into: &out)
                out += " : "
                try write(dict[key]!, into: &out, indent: indent + 2)
                out += k == dict.count - 1 ? "\n" : ",\n"
            }
            out += spaces(indent) + "}"
        case let array as [Any]:
            if array.isEmpty { out += "[]"; return }
            out += "[\n"
            for (k, element) in array.enumerated() {
                out += spaces(indent + 2)
                try write(element, into: &out, indent: indent + 2)
                out += k == array.count - 1 ? "\n" : ",\n"
            }
            out += spaces(indent) + "]"
        case is NSNull: out += "null"
        default:
            throw InvalidValue(description: "JSON cannot hold a value of type \(type(of: value))")
        }
    }

    /// The value inside any number of Optional layers (nil for none).
    private static func unwrapped(_ value: Any) -> Any? {
        guard let o = value as? JSONOptionalValue else { return value }
        return o.wrapped.flatMap(unwrapped)
    }

    private static func number(_ d: Double, text: String, into out: inout String) throws {
        guard d.isFinite else { throw InvalidValue(description: "JSON cannot hold \(d)") }
        if d == d.rounded(), abs(d) < 1e15 {
            out += String(Int64(d))
        } else {
            out += text
        }
    }

    private static func string(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }

    private static func spaces(_ n: Int) -> String { String(repeating: " ", count: n) }
}

/// Any Optional, seen through `Any` (a nil inside `Any` is still an Optional, not nil).
private protocol JSONOptionalValue { var wrapped: Any? { get } }

extension Optional: JSONOptionalValue {
    fileprivate var wrapped: Any? { self.map { $0 as Any } }
}

/// What every JSON the tool writes records about the model: its file, SHA-256 and how it was built.
func modelRecord(path: String, arch: String?) throws -> [String: Any] {
    var r: [String: Any] = ["file": path, "sha256": try SHA256.hex(ofFile: path)]
    if let arch { r["arch"] = arch }
    return r
}
