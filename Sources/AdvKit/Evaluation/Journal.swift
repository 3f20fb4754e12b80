import Foundation

/// The finished units of an evaluation (one attack against one defense, one curve, one defense's checks, one
/// transfer attack), each kept in its own small JSON file as soon as it is done, so that an evaluation stopped at
/// any moment (kill -9, a pre-empted node) resumes where it was: `advkit evaluate` run again with the same
/// settings on the same data reuses every finished unit and computes only the rest.
///
/// The files live in `<output>/progress/<key>/`, the key a hash of the settings, the test images, the format
/// version and AdvKit's version (`AdvKitVersion`: a release that changes what a unit computes or how it is labelled
/// never reuses an older release's units), so a unit is reused only by the evaluation that made it. Each is written
/// atomically (temporary file, fsync, rename): a unit is on disk whole or not at all, and records the version that
/// wrote it. A file that does not decode, or that another version wrote, is recomputed, never trusted.
struct EvaluationJournal {
    /// v2: cells and curves carry their attack form and `adaptive`; galleries their picked rows.
    /// v3: the noise defense's draws are keyed per image (`NoisyClassifier`), so a v2 noise cell is not what this
    /// code computes; galleries carry the clean confidence.
    static let formatVersion = "journal-v3"
    let directory: String

    init(outputDirectory: String, settings: EvaluationSettings, test: Dataset) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let settingsJSON = String(decoding: try encoder.encode(settings), as: UTF8.self)
        var h = Hash()
        h.add(EvaluationJournal.formatVersion)
        h.add(AdvKitVersion.string)
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

    /// A unit's file: the value, the unit's name and the version that wrote it.
    struct Envelope<T: Codable>: Codable {
        var advkit: String
        var unit: String
        var value: T
    }

    func load<T: Codable>(_ unit: String, as type: T.Type) -> T? {
        guard let data = FileManager.default.contents(atPath: path(unit)),
              let kept = try? JSONDecoder().decode(Envelope<T>.self, from: data),
              kept.advkit == AdvKitVersion.string, kept.unit == unit else { return nil }
        return kept.value
    }

    func save<T: Codable>(_ value: T, unit: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        try FileIO.writeAtomically(try encoder.encode(Envelope(advkit: AdvKitVersion.string, unit: unit, value: value)), to: path(unit))
    }

    /// 64-bit FNV-1a.
    struct Hash {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325
        mutating func add(_ byte: UInt8) { value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        mutating func add(_ s: String) { for b in s.utf8 { add(b) }; add(0) }
        mutating func add(_ bytes: UnsafeRawBufferPointer) { for b in bytes { add(b) } }
    }
}
