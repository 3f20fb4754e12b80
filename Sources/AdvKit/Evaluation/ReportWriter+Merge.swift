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

    /// The machine facts a share's numbers depend on, from its results.json: the thread count (reductions are split
    /// by thread, so weights trained at 1 and 2 threads differ in their last bits and every cell after them) and
    /// OpenBLAS's core type (its kernels differ by CPU). Shares that differ would merge into numbers no single run
    /// gives (seen with Slurm: shares at 1 thread against a one-process run at 2 trained models with different
    /// SHA-256s), so `merge` refuses them.
    static func checkSameEnvironment(_ dirs: [String]) throws {
        var seen: [(dir: String, threads: Int?, core: String?)] = []
        for dir in dirs {
            let path = dir + "/results.json"
            let doc = (try? JSONSerialization.jsonObject(with: FileIO.read(path))) as? [String: Any]
            let versions = doc?["versions"] as? [String: Any]
            seen.append((dir, versions?["threads"] as? Int, versions?["openblas_core"] as? String))
        }
        guard let first = seen.first else { return }
        if let other = seen.first(where: { $0.threads != first.threads }) {
            throw AdvKitError.invalidArgument("the shares ran at different thread counts (\(first.threads.map(String.init) ?? "unknown") in "
                + "\(first.dir), \(other.threads.map(String.init) ?? "unknown") in \(other.dir)): AdvKit's results are reproducible "
                + "only at one thread count; run every share with the same --threads")
        }
        if let other = seen.first(where: { $0.core != first.core }) {
            throw AdvKitError.invalidArgument("the shares ran on different CPU types (OpenBLAS core \(first.core ?? "unknown") in "
                + "\(first.dir), \(other.core ?? "unknown") in \(other.dir)): their numbers differ in the last bits; run every share "
                + "on one CPU type (a Slurm --constraint, a Kubernetes node selector)")
        }
    }
}
