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
        for attack in r.settings.attacks.map(\.name) {
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
        let known: [(String, String, String)] = merged.settings.attacks.map(\.name).map { a in
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

    /// The report's first lines: what was evaluated, and the headline numbers.
    static func headline(_ r: EvaluationResults) -> String {
        let s = r.settings
        var out = ""
        if let m = s.model {
            let shape = m.inputShape.map(String.init).joined(separator: "×")
            var what = "**Model evaluated:** `\(m.file)` (\(m.format)"
            if let a = m.architecture { what += ", built-in architecture \(a)" }
            if let o = m.opsets { what += ", opset " + o.sorted { $0.key < $1.key }.map { $0.key.isEmpty ? "\($0.value)" : "\($0.key) \($0.value)" }.joined(separator: ", ") }
            what += "), input \(shape), SHA-256 \(m.sha256.prefix(16))…"
            if let p = m.preprocessing { what += "; preprocessing added: \(p)" }
            out += what + ".\n\n"
        } else {
            out += "**Model evaluated:** AdvKit's built-in architecture, trained here on \(s.dataset).\n\n"
        }
        var lines: [String] = []
        if let clean = r.cleanAccuracy["none"] { lines.append("clean accuracy \(pct(clean))") }
        if let aa = r.whiteBox.first(where: { $0.defense == "none" && $0.attack == "autoattack" }) {
            var budget = ""
            if case let .autoattack(steps, queries)? = s.attacks.first(where: { $0.name == "autoattack" }), steps != 100 || queries != 5000 {
                budget = " (at \(steps) steps and \(queries) Square queries, not the paper's 100 and 5,000)"
            }
            lines.append("AutoAttack (standard) robust accuracy at L∞ ε = \(s.epsilon)\(budget): \(pct(aa.robustAccuracy))")
        } else if let pgd = r.whiteBox.first(where: { $0.defense == "none" && $0.attack == "pgd" }) {
            lines.append("PGD robust accuracy at L∞ ε = \(s.epsilon): \(pct(pgd.robustAccuracy)) (AutoAttack not run)")
        }
        // The best defense: the highest worst case among those whose every cell is adaptive (a † cell is an upper
        // bound, so it cannot make a defense "best").
        let measured = r.worstCase.filter { d, _ in d != "none" && !r.whiteBox.contains { $0.defense == d && !$0.adaptive } }
        let undefendedWorst = r.worstCase["none"]
        if let best = measured.max(by: { ($0.value, $1.key) < ($1.value, $0.key) }), let none = undefendedWorst, best.value <= none {
            lines.append("no defense raised the worst case above the undefended model's \(pct(none))")
        } else if let best = measured.max(by: { ($0.value, $1.key) < ($1.value, $0.key) }) {
            var b = "best defense by worst case: \(best.key), \(pct(best.value)) (clean \(pct(r.cleanAccuracy[best.key])))"
            if let none = r.worstCase["none"] { b += " against \(pct(none)) undefended" }
            if let file = r.models.first(where: { $0.name == best.key })?.hardenedFile { b += "; hardened model: `\(file)`" }
            lines.append(b)
        }
        if !lines.isEmpty { out += "**Headline:** " + lines.joined(separator: "; ") + ".\n\n" }
        let hardened = r.models.compactMap { m in m.hardenedFile.map { "\(m.name) → `\($0)`" } }
        if !hardened.isEmpty {
            out += "Hardened models, in the model's own format (fine-tuned from its weights): " + hardened.joined(separator: ", ") + ".\n\n"
        }
        return out
    }

    static func pct(_ x: Double?) -> String { x.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }
    static func num(_ x: Double?) -> String { x.map { String(format: "%.3f", $0) } ?? "–" }

    static func markdown(_ r: EvaluationResults, pictures: [Picture], timings: [String: Double]) -> String {
        let s = r.settings
        var out = "# AdvKit robustness report\n\n"
        out += headline(r)
        out += "AdvKit \(AdvKitVersion.string). Dataset \(s.dataset), \(s.limit) test images, L∞ ε = \(s.epsilon) for the tables, PGD \(s.pgdSteps) steps"
        out += s.model == nil ? ", models trained on \(s.trainImages) images for \(s.epochs) epoch(s)"
            : ", trained defenses fine-tuned from the model's weights on \(s.trainImages) images for \(s.epochs) epoch(s) at learning rate \(s.learningRateValue)"
        out += ", seed \(s.seed)\(s.quick ? " (--quick)" : "").\n"
        out += "A number is the share of test images the defended model still classifies correctly (or flags, for a defense with a detector).\n\n"
        let defenses = s.defenses.map(\.name)
        let attacks = s.attacks.map(\.name)
        if !r.whiteBox.isEmpty {
            out += "## White-box: attack × defense (adaptive attacks where the defense has one)\n\n"
            out += "| defense | clean | " + attacks.joined(separator: " | ") + " | worst case | attack form |\n"
            out += "|---|---|" + String(repeating: "---|", count: attacks.count) + "---|---|\n"
            for d in defenses {
                let row = attacks.compactMap { a in r.whiteBox.first { $0.defense == d && $0.attack == a } }
                let cells = attacks.map { a in
                    r.whiteBox.first { $0.defense == d && $0.attack == a }.map { pct($0.robustAccuracy) + ($0.adaptive ? "" : " †") } ?? pct(nil)
                }
                out += "| \(d) | \(pct(r.cleanAccuracy[d])) | " + cells.joined(separator: " | ") + " | \(pct(r.worstCase[d])) | \(forms(row)) |\n"
            }
            out += "\nWorst case: an image counts as robust only if every attack above (DeepFool and C&W aside: they always"
            out += " succeed by construction) and every black-box attack (transfer and query-based) failed on it.\n"
            if case let .autoattack(steps, queries)? = s.attacks.first(where: { $0.name == "autoattack" }) {
                let order = ["apgd-ce", "apgd-t", "apgd-dlr", "fab-t", "square"]
                let parts = r.whiteBox.compactMap { c -> String? in
                    guard let broken = c.brokenBy else { return nil }
                    let named = broken.sorted { (order.firstIndex(of: $0.key) ?? 9, $0.key) < (order.firstIndex(of: $1.key) ?? 9, $1.key) }
                    return "\(c.defense) " + named.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                }
                out += "\nAutoAttack ran at \(steps) steps and \(queries) Square queries"
                out += steps == 100 && queries == 5000 ? " (the paper's budget)" : " (the paper: 100 and 5,000)"
                out += "; the noise defense got its rand version. Images each component broke, of those the earlier ones left: "
                out += parts.joined(separator: "; ") + ".\n"
            }
            if r.whiteBox.contains(where: { !$0.adaptive }) { out += "\n" + notAdaptive + "\n" }
            out += "\n"
        }
        if !r.blackBox.isEmpty {
            out += "## Black-box: PGD transferred from the attacker's surrogates, and query-based attacks on the outputs alone\n\n"
            // One column per attack and form (a query attack's form names what it saw: the same for every defense
            // but those with a detector, which it does not see).
            var columns: [(attack: String, label: String)] = []
            for c in r.blackBox {
                let label = c.attack == "pgd" ? "PGD \(c.form)" : c.attack == "square" ? "Square (scores)" : "HopSkipJump (labels)"
                if !columns.contains(where: { $0.label == label }) { columns.append((c.attack == "pgd" ? c.form : c.attack, label)) }
            }
            out += "| defense | " + columns.map(\.label).joined(separator: " | ") + " |\n|---|" + String(repeating: "---|", count: columns.count) + "\n"
            for d in defenses {
                out += "| \(d) | " + columns.map { col in
                    pct(r.blackBox.first { $0.defense == d && ($0.attack == "pgd" ? $0.form : $0.attack) == col.attack }?.robustAccuracy)
                }.joined(separator: " | ") + " |\n"
            }
            out += "\nThe surrogates were trained by the attacker on the other half of the training data, which the defenders never saw."
            let queries = s.queryAttacks.map { a -> String in
                switch a {
                case let .square(q): return "Square (L∞ ε \(s.epsilon), \(q) queries per image, scores only)"
                case let .hopSkipJump(q): return "HopSkipJump (L∞, \(q) queries per image, labels only; broken when it found an image within ε)"
                default: return a.name
                }
            }
            if !queries.isEmpty {
                out += " The query-based attacks see only the defended model's outputs, never a gradient: " + queries.joined(separator: "; ")
                out += ". A defense's detector flags count as robust; these attacks do not see it.\n\n"
            } else { out += "\n\n" }
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
