import Foundation

/// Errors from reading files and from user input. Each names what was wrong and where, in words a
/// person can act on; the command-line tool prints `description` and exits non-zero.
public enum AdvKitError: Error, CustomStringConvertible, Equatable {
    /// A file that could not be read or written.
    case io(path: String, reason: String)
    /// A file whose contents are not what its format requires.
    case invalidFile(path: String, reason: String)
    /// Data that does not fit the model or the other data (shapes, counts, labels, NaN pixels).
    case invalidData(String)
    /// A bad argument or option value.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .io(path, reason): return "\(path): \(reason)"
        case let .invalidFile(path, reason): return "\(path): \(reason)"
        case let .invalidData(reason): return reason
        case let .invalidArgument(reason): return reason
        }
    }
}

extension AdvKitError: LocalizedError {
    public var errorDescription: String? { description }
}

/// File reading with clear errors, and atomic writing.
@_spi(Support) public enum FileIO {
    /// The whole file; a clear error when it cannot be read. `limit` guards against absurd sizes.
    public static func read(_ path: String, limit: Int = 1 << 34) throws -> Data {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw AdvKitError.io(path: path, reason: "no such file")
        }
        if isDir.boolValue { throw AdvKitError.io(path: path, reason: "is a directory, not a file") }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw AdvKitError.io(path: path, reason: "cannot open for reading (permissions?)")
        }
        defer { try? handle.close() }
        do {
            let data = try handle.readToEnd() ?? Data()
            if data.count > limit { throw AdvKitError.invalidFile(path: path, reason: "larger than \(limit) bytes") }
            return data
        } catch let e as AdvKitError {
            throw e
        } catch {
            throw AdvKitError.io(path: path, reason: "read failed: \(error.localizedDescription)")
        }
    }

    /// Writes `data` atomically: a temporary file beside the target, fsync, then rename. A crash at any
    /// moment leaves the old file or the new one, never a torn one.
    public static func writeAtomically(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw AdvKitError.io(path: path, reason: "the folder \(dir) does not exist")
        }
        let tmp = dir + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw AdvKitError.io(path: path, reason: "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var ok = true
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n <= 0 { ok = false; break }
                off += n
            }
        }
        if ok { ok = fsync(fd) == 0 }
        let err = errno
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw AdvKitError.io(path: path, reason: "write failed: \(String(cString: strerror(ok ? errno : err)))")
        }
        // Make the rename itself durable.
        let dfd = open(dir, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}
