import Foundation

/// The finished units of an evaluation (one attack against one defense, one curve, one defense's checks, one
/// transfer attack), each kept in its own small JSON file as soon as it is done, so that an evaluation stopped at
/// any moment (kill -9, a pre-empted node) resumes where it was: `advkit evaluate` run again with the same
/// settings on the same data reuses every finished unit and computes only the rest.
///
/// The files live in `<output>/progress/<key>/`, the key a hash of the settings, the test images and the
/// format version, so a unit is reused only by the evaluation that made it. Each is written atomically (temporary
/// file, fsync, rename): a unit is on disk whole or not at all. A file that does not decode (written by another
/// version, damaged) is recomputed, never trusted.
struct EvaluationJournal {
    static let formatVersion = "journal-v1"
    let directory: String

    init(outputDirectory: String, settings: EvaluationSettings, test: Dataset) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let settingsJSON = String(decoding: try encoder.encode(settings), as: UTF8.self)
        var h = Hash()
        h.add(EvaluationJournal.formatVersion)
        h.add(settingsJSON)
        h.add("\(test.imageShape)|\(test.count)")
        test.images.withUnsafeBufferPointer { p in h.add(UnsafeRawBufferPointer(p)) }
        for l in test.labels { h.add(UInt8(truncatingIfNeeded: l)) }
        directory = outputDirectory + "/progress/" + String(h.value, radix: 16)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// The file of one unit: its name made safe for a path, plus a hash of the exact name (no two units share one).
    func path(_ unit: String) -> String {
        let safe = String(unit.map { $0.isLetter || $0.isNumber ? $0 : "-" })
        var h = Hash()
        h.add(unit)
        return directory + "/" + safe + "-" + String(h.value & 0xFFFF_FFFF, radix: 16) + ".json"
    }

    func load<T: Decodable>(_ unit: String, as type: T.Type) -> T? {
        guard let data = FileManager.default.contents(atPath: path(unit)) else { return nil }
        return try? JSONDecoder().decode(T.self, from: data)
    }

    func save<T: Encodable>(_ value: T, unit: String) throws {
        try FileIO.writeAtomically(try JSONEncoder().encode(value), to: path(unit))
    }

    /// 64-bit FNV-1a.
    struct Hash {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325
        mutating func add(_ byte: UInt8) { value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        mutating func add(_ s: String) { for b in s.utf8 { add(b) }; add(0) }
        mutating func add(_ bytes: UnsafeRawBufferPointer) { for b in bytes { add(b) } }
    }
}
