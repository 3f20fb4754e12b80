import Foundation

extension ReportWriter {
    /// Copies the hardened models that merged results name (`models[].hardenedFile`, relative to a share's folder)
    /// from the share that wrote each into `out`, checking each file's SHA-256 against the one its share recorded:
    /// a merged folder then holds every model its report names, as one run's folder does.
    static func copyHardenedFiles(_ r: EvaluationResults, from dirs: [String], to out: String) throws {
        let fm = FileManager.default
        for m in r.models {
            guard let file = m.hardenedFile else { continue }
            let candidates = dirs.filter { fm.fileExists(atPath: $0 + "/" + file) }
            guard let src = try candidates.first(where: { try m.hardenedSHA256 == nil || SHA256.hex(ofFile: $0 + "/" + file) == m.hardenedSHA256 }) else {
                throw AdvKitError.invalidFile(path: file, reason: "the hardened model of '\(m.name)' is in no share's folder"
                                              + (candidates.isEmpty ? "" : " with the SHA-256 its results record"))
            }
            let target = out + "/" + file
            if (src as NSString).standardizingPath == (out as NSString).standardizingPath { continue }
            try fm.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try? fm.removeItem(atPath: target)
            try fm.copyItem(atPath: src + "/" + file, toPath: target)
        }
    }
}
