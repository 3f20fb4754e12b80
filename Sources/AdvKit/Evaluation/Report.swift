import Foundation

/// Writes an evaluation's folder: results.json, report.md, report.html (pictures embedded), and the PNGs.
/// Every document states the AdvKit version that wrote it (`AdvKitVersion`).
public enum ReportWriter {
    typealias Picture = (file: String, title: String, caption: String)

    /// Writes every file; returns their names.
    @discardableResult
    public static func write(_ r: EvaluationResults, evaluator: Evaluator, classNames: [String]) throws -> [String] {
        let dir = evaluator.outputDirectory
        var pictures: [Picture] = []
        func save(_ img: PNG.Image, _ file: String, _ title: String, _ caption: String) throws {
            try PNG.write(img, to: dir + "/" + file)
            pictures.append((file, title, caption))
        }
        for attack in r.settings.attacks {
            guard let g = evaluator.gallery(attack), let record = r.galleries.first(where: { $0.attack == attack }) else { continue }
            let rows = g.rows.enumerated().map { i, row in
                "row \(i + 1) (\(row.outcome)): \(classNames[row.label]) → predicted \(classNames[row.clean]), after the attack \(classNames[row.adv]) (\(String(format: "%.1f%%", row.conf * 100)))"
            }.joined(separator: "; ")
            try save(g.png, "gallery-\(attack).png", "Gallery: \(attack.uppercased()) on the undefended model",
                     "Each row: original, perturbation (amplified to the full range), adversarial. " + galleryCounts(record) + " " + rows)
        }
        if r.models.contains(where: { $0.name == "none" }) {
            try save(evaluator.saliencyPicture(), "saliency.png", "Saliency maps (undefended model)",
                     "Each row: an image and |∂logit(true class)/∂x| (Simonyan et al. 2013), scaled to its maximum.")
        }
        let shard = evaluator.shard.map { "\($0.index)/\($0.count)" }
        return try writeDocuments(r, dir: dir, pictures: pictures, timings: evaluator.timings, shard: shard)
    }

    /// What a gallery's rows are: how many fooled the model, failed, or were wrong before the attack.
    static func galleryCounts(_ g: EvaluationResults.Gallery) -> String {
        "Successful attacks first: of the \(g.indices.count) images shown, \(g.fooled) fooled the model, \(g.failed) "
            + "\(g.failed == 1 ? "was" : "were") still classified right after the attack (failed), and \(g.alreadyWrong) "
            + "\(g.alreadyWrong == 1 ? "was" : "were") already misclassified before it."
    }

    /// The curves (re-plotted from the numbers), results.json, report.md and report.html. `pictures` are the
    /// galleries and saliency maps already in `dir`.
    static func writeDocuments(_ r: EvaluationResults, dir: String, pictures extra: [Picture], timings: [String: Double],
                               shard: String?) throws -> [String] {
        var pictures: [Picture] = []
        for attack in ["fgsm", "pgd"] {
            let curves = r.curves.filter { $0.attack == attack }
            guard !curves.isEmpty else { continue }
            let series = curves.map { c in Plot.Series(name: c.defense, points: zip(c.epsilons, c.robustAccuracy).map { (Double($0), $1) }) }
            let legend = curves.enumerated().map { "\(Plot.colorName($0.offset)) = \($0.element.defense)" }.joined(separator: ", ")
            let file = "curves-\(attack).png"
            try PNG.write(Plot.lineChart(series, xMax: Double(r.settings.epsilons.max() ?? 0.3)), to: dir + "/" + file)
            pictures.append((file, "Robust accuracy (%) against epsilon (L∞), \(attack.uppercased())", legend))
        }
        pictures += extra
        let env = ProcessInfo.processInfo.environment
        let results = try JSONSerialization.jsonObject(with: encoder().encode(r))
        var document: [String: Any] = [
            "results": results,
            "timings_seconds": timings.mapValues { ($0 * 10).rounded() / 10 },
            "versions": ["advkit": AdvKitVersion.string, "openblas_core": Parallelism.blasCoreName, "threads": Parallelism.threads,
                         "OPENBLAS_CORETYPE": env["OPENBLAS_CORETYPE"] ?? "(unset)"],
        ]
        if let shard { document["shard"] = shard }
        try FileIO.writeAtomically(try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys]),
                                   to: dir + "/results.json")
        let md = markdown(r, pictures: pictures, timings: timings)
        try FileIO.writeAtomically(Data(md.utf8), to: dir + "/report.md")
        try FileIO.writeAtomically(Data(html(md, pictures: pictures, dir: dir).utf8), to: dir + "/report.html")
        return ["results.json", "report.md", "report.html"] + pictures.map(\.file)
    }

    /// Reads the results of a finished evaluation folder.
    public static func read(_ dir: String) throws -> (results: EvaluationResults, timings: [String: Double]) {
        let path = dir + "/results.json"
        let data = try FileIO.read(path)
        guard let doc = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let results = doc["results"] else {
            throw AdvKitError.invalidFile(path: path, reason: "not an AdvKit results.json (no \"results\" object)")
        }
        let written = ((doc["versions"] as? [String: Any])?["advkit"] as? String) ?? "(unknown)"
        guard written == AdvKitVersion.string else {
            throw AdvKitError.invalidFile(path: path, reason: "written by AdvKit \(written), this is \(AdvKitVersion.string): "
                                          + "its cells may be computed or labelled differently; run the evaluation again")
        }
        do {
            let r = try JSONDecoder().decode(EvaluationResults.self, from: JSONSerialization.data(withJSONObject: results))
            return (r, (doc["timings_seconds"] as? [String: Double]) ?? [:])
        } catch {
            throw AdvKitError.invalidFile(path: path, reason: "the results do not decode: \(error)")
        }
    }

    /// Merges shard folders into `out`: results.json, the report, and the pictures found in the shards.
    @discardableResult
    public static func merge(_ dirs: [String], into out: String) throws -> EvaluationResults {
        let parts = try dirs.map(read)
        let merged = try EvaluationResults.merge(parts.map(\.results))
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var pictures: [Picture] = []
        let known: [(String, String, String)] = merged.settings.attacks.map { a in
            ("gallery-\(a).png", "Gallery: \(a.uppercased()) on the undefended model",
             "Each row: original, perturbation (amplified), adversarial. " + (merged.galleries.first { $0.attack == a }.map(galleryCounts) ?? ""))
        } + [("saliency.png", "Saliency maps (undefended model)", "Each row: an image and |∂logit(true class)/∂x|, scaled to its maximum.")]
        for (file, title, caption) in known {
            guard let src = dirs.first(where: { FileManager.default.fileExists(atPath: $0 + "/" + file) }) else { continue }
            if src != out {
                try? FileManager.default.removeItem(atPath: out + "/" + file)
                try FileManager.default.copyItem(atPath: src + "/" + file, toPath: out + "/" + file)
            }
            pictures.append((file, title, caption))
        }
        var timings: [String: Double] = [:]
        for (i, p) in parts.enumerated() { for (k, v) in p.timings { timings["shard \(i) \(k)"] = v } }
        _ = try writeDocuments(merged, dir: out, pictures: pictures, timings: timings, shard: nil)
        return merged
    }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return e
    }

    static let notAdaptive = "† not adaptive: the attack's loss leaves out part of the defense (a detector whose flags count as"
        + " robust), so the number is an upper bound on robust accuracy, not a measure of the defense."

    /// The attack form of a row of cells: one form when they share it, else each attack's.
    static func forms(_ cells: [EvaluationResults.Cell]) -> String {
        let distinct = cells.map(\.form).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        if distinct.count <= 1 { return distinct.first ?? "" }
        return cells.map { "\($0.attack): \($0.form)" }.joined(separator: "; ")
    }

    static func pct(_ x: Double?) -> String { x.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }
    static func num(_ x: Double?) -> String { x.map { String(format: "%.3f", $0) } ?? "–" }

    static func markdown(_ r: EvaluationResults, pictures: [Picture], timings: [String: Double]) -> String {
        let s = r.settings
        var out = "# AdvKit robustness report\n\n"
        out += "AdvKit \(AdvKitVersion.string). Dataset \(s.dataset), \(s.limit) test images, L∞ ε = \(s.epsilon) for the tables, PGD \(s.pgdSteps) steps"
        out += ", models trained on \(s.trainImages) images for \(s.epochs) epoch(s), seed \(s.seed)\(s.quick ? " (--quick)" : "").\n"
        out += "A number is the share of test images the defended model still classifies correctly (or flags, for a defense with a detector).\n\n"
        let defenses = s.defenses
        if !r.whiteBox.isEmpty {
            out += "## White-box: attack × defense (adaptive attacks where the defense has one)\n\n"
            out += "| defense | clean | " + s.attacks.joined(separator: " | ") + " | worst case | attack form |\n"
            out += "|---|---|" + String(repeating: "---|", count: s.attacks.count) + "---|---|\n"
            for d in defenses {
                let row = s.attacks.compactMap { a in r.whiteBox.first { $0.defense == d && $0.attack == a } }
                let cells = s.attacks.map { a in
                    r.whiteBox.first { $0.defense == d && $0.attack == a }.map { pct($0.robustAccuracy) + ($0.adaptive ? "" : " †") } ?? pct(nil)
                }
                out += "| \(d) | \(pct(r.cleanAccuracy[d])) | " + cells.joined(separator: " | ") + " | \(pct(r.worstCase[d])) | \(forms(row)) |\n"
            }
            out += "\nWorst case: an image counts as robust only if every attack above (DeepFool and C&W aside: they always"
            out += " succeed by construction) and every transfer attack failed on it.\n"
            if r.whiteBox.contains(where: { !$0.adaptive }) { out += "\n" + notAdaptive + "\n" }
            out += "\n"
        }
        if !r.blackBox.isEmpty {
            out += "## Black-box: PGD transferred from the attacker's surrogates (\"hide the model\", \"hide the data\")\n\n"
            let forms = Array(Set(r.blackBox.map(\.form))).sorted()
            out += "| defense | " + forms.joined(separator: " | ") + " |\n|---|" + String(repeating: "---|", count: forms.count) + "\n"
            for d in defenses {
                out += "| \(d) | " + forms.map { f in pct(r.blackBox.first { $0.defense == d && $0.form == f }?.robustAccuracy) }.joined(separator: " | ") + " |\n"
            }
            out += "\nThe surrogates were trained by the attacker on the other half of the training data, which the defenders never saw.\n\n"
        }
        if !r.perturbationNeeded.isEmpty {
            out += "## Perturbation needed to fool the model (median over fooled images)\n\n| defense | DeepFool L2 | DeepFool L∞ | C&W L2 |\n|---|---|---|---|\n"
            for n in r.perturbationNeeded { out += "| \(n.defense) | \(num(n.deepfoolL2)) | \(num(n.deepfoolLinf)) | \(num(n.cwL2)) |\n" }
            out += "\n"
        }
        if !r.curves.isEmpty {
            out += "## Robust accuracy against epsilon\n\n| defense | attack | " + s.epsilons.map { "ε \($0)" }.joined(separator: " | ") + " | attack form |\n"
            out += "|---|---|" + String(repeating: "---|", count: s.epsilons.count) + "---|\n"
            for c in r.curves {
                let mark = c.adaptive ? "" : " †"
                out += "| \(c.defense) | \(c.attack)\(mark) | " + c.robustAccuracy.map { pct($0) }.joined(separator: " | ") + " | \(c.form) |\n"
            }
            if r.curves.contains(where: { !$0.adaptive }) { out += "\n" + notAdaptive + "\n" }
            out += "\n"
        }
        let failed = r.sanity.filter { !$0.passed }
        out += "## Sanity checks (gradient masking)\n\n"
        out += failed.isEmpty ? "All \(r.sanity.count) checks passed.\n\n" : "**\(failed.count) of \(r.sanity.count) checks warn:**\n\n"
        for c in failed { out += "- ⚠ \(c.defense): \(c.check) — \(c.detail)\n" }
        if !failed.isEmpty { out += "\n" }
        out += "<details><summary>every check</summary>\n\n"
        for c in r.sanity { out += "- \(c.passed ? "ok" : "WARN") \(c.defense): \(c.check) — \(c.detail)\n" }
        out += "\n</details>\n\n## Pictures\n\n"
        for p in pictures { out += "### \(p.title)\n\n![\(p.title)](\(p.file))\n\n\(p.caption)\n\n" }
        if let total = timings["total"] { out += String(format: "Evaluation time: %.0f s (results.json has every timing).\n", total) }
        return out
    }

    /// The Markdown as HTML, self-contained: pictures inlined as data URIs.
    static func html(_ md: String, pictures: [Picture], dir: String) -> String {
        var body = ""
        var inTable = false
        for line in md.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("|") {
                let cells = line.trimmingCharacters(in: .whitespaces).dropFirst().dropLast().split(separator: "|", omittingEmptySubsequences: false)
                    .map { escape($0.trimmingCharacters(in: .whitespaces)) }
                if cells.allSatisfy({ $0.allSatisfy { $0 == "-" } }) { continue }
                if !inTable { body += "<table>\n<tr>" + cells.map { "<th>\($0)</th>" }.joined() + "</tr>\n"; inTable = true; continue }
                body += "<tr>" + cells.map { "<td>\($0)</td>" }.joined() + "</tr>\n"
                continue
            }
            if inTable { body += "</table>\n"; inTable = false }
            if line.hasPrefix("### ") { body += "<h3>\(escape(String(line.dropFirst(4))))</h3>\n" }
            else if line.hasPrefix("## ") { body += "<h2>\(escape(String(line.dropFirst(3))))</h2>\n" }
            else if line.hasPrefix("# ") { body += "<h1>\(escape(String(line.dropFirst(2))))</h1>\n" }
            else if line.hasPrefix("![") , let file = pictures.first(where: { line.contains("(\($0.file))") }) {
                let data = (try? Data(contentsOf: URL(fileURLWithPath: dir + "/" + file.file)))?.base64EncodedString() ?? ""
                body += "<img alt=\"\(escape(file.title))\" src=\"data:image/png;base64,\(data)\">\n"
            }
            else if line.hasPrefix("- ") { body += "<p>• \(escape(String(line.dropFirst(2))))</p>\n" }
            else if line.hasPrefix("<details") || line.hasPrefix("</details") { body += line + "\n" }
            else if !line.isEmpty { body += "<p>\(escape(line).replacingOccurrences(of: "**", with: ""))</p>\n" }
        }
        if inTable { body += "</table>\n" }
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>AdvKit robustness report</title>
        <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}
        td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
        img{image-rendering:pixelated;border:1px solid #ddd;max-width:100%}</style></head><body>
        \(body)</body></html>
        """
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
