import Foundation

/// Writes an evaluation's folder from its data: results.json, report.md, report.html (self-contained: figures
/// inline as SVG, no network), the figures as files for papers (curves-<attack>.svg, gallery-<attack>.svg,
/// saliency.svg; the galleries' and saliency maps' pixels also as PNG rasters), and pictures.json (the pictures'
/// data, from which `merge` draws a merged report's figures). Every document states the AdvKit version that wrote it
/// (`AdvKitVersion`).
///
/// The curves are SVG only: a PNG with readable text needs a font rasteriser (cairo and freetype, a new system
/// dependency of the C target, or a subprocess such as rsvg-convert), and every browser, vector editor and
/// LaTeX toolchain (via rsvg-convert or Inkscape) takes the SVG.
public enum ReportWriter {
    /// A figure of the report: its file, title, caption, and its SVG (drawn for inlining; `SVG.file` makes the file).
    struct Figure {
        enum Kind { case curves, gallery, saliency }
        var kind: Kind
        var file: String
        var title: String
        var caption: String
        var svg: String
    }

    /// Writes every file of `r`'s report into `dir`; returns their names. `timings` (seconds per unit, "total")
    /// and `shard` ("I/N") go to results.json.
    @discardableResult
    public static func write(_ r: EvaluationResults, pictures: ReportPictures, to dir: String, classNames: [String],
                             timings: [String: Double] = [:], shard: String? = nil) throws -> [String] {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var files: [String] = []
        let figs = figures(r, pictures: pictures, classNames: classNames)
        for f in figs {
            try FileIO.writeAtomically(Data(SVG.file(f.svg).utf8), to: dir + "/" + f.file)
            files.append(f.file)
        }
        for g in pictures.galleries {
            if let img = try SVGFigures.galleryRaster(g) {
                try PNG.write(img, to: dir + "/gallery-\(g.attack).png")
                files.append("gallery-\(g.attack).png")
            }
        }
        if let img = try SVGFigures.saliencyRaster(pictures.saliency) {
            try PNG.write(img, to: dir + "/saliency.png")
            files.append("saliency.png")
        }
        let kept = PicturesFile(advkit: AdvKitVersion.string, classNames: classNames, pictures: pictures)
        try FileIO.writeAtomically(try encoder().encode(kept), to: dir + "/pictures.json")

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
        try FileIO.writeAtomically(Data(markdown(r, figures: figs, timings: timings).utf8), to: dir + "/report.md")
        try FileIO.writeAtomically(Data(html(r, figures: figs, timings: timings).utf8), to: dir + "/report.html")
        return ["results.json", "report.md", "report.html", "pictures.json"] + files
    }

    /// pictures.json: the pictures' data and the class names they are labelled with.
    struct PicturesFile: Codable {
        var advkit: String
        var classNames: [String]
        var pictures: ReportPictures
    }

    /// The pictures kept in a report folder (nil when there are none: a folder written before pictures.json).
    static func readPictures(_ dir: String) throws -> PicturesFile? {
        let path = dir + "/pictures.json"
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(PicturesFile.self, from: try FileIO.read(path))
        } catch let e as AdvKitError {
            throw e
        } catch {
            throw AdvKitError.invalidFile(path: path, reason: "not an AdvKit pictures.json: \(error)")
        }
    }

    /// The report's figures: the curves of each attack that has them, each gallery, the saliency maps.
    static func figures(_ r: EvaluationResults, pictures: ReportPictures, classNames: [String]) -> [Figure] {
        var out: [Figure] = []
        for attack in ["fgsm", "pgd"] {
            let curves = r.curves.filter { $0.attack == attack }
            guard !curves.isEmpty else { continue }
            let series = curves.map { c in
                SVGPlot.Series(name: c.defense, points: zip(c.epsilons, c.robustAccuracy).map { .init(x: Double($0), y: $1) },
                               clean: r.cleanAccuracy[c.defense], mark: c.adaptive ? "" : " †")
            }
            let title = "\(attack.uppercased()): robust accuracy against ε (L∞)"
            var caption = "One line per defense (\(attack.uppercased()) in each defense's form, as in the table below); the ticks on the"
            caption += " x axis are the ε measured, the short bar left of the y axis marks each defense's clean accuracy, and each point's"
            caption += " tooltip gives its exact value."
            if curves.contains(where: { !$0.adaptive }) { caption += " † not adaptive (see the note under the table)." }
            out.append(.init(kind: .curves, file: "curves-\(attack).svg", title: title, caption: caption,
                             svg: SVGPlot.chart(title: title, series: series, xTicks: r.settings.epsilons.map(Double.init))))
        }
        for g in pictures.galleries {
            let title = "Gallery: \(g.attack.uppercased()) on the undefended model"
            var caption = "Each row: the clean image x with the model's prediction and confidence (true class below), the perturbation"
            caption += " δ = x′ − x amplified ×k so that its largest entry reaches black or white (mid-gray is 0; k and ‖δ‖∞ under it),"
            caption += " and the adversarial image x′ with the prediction and confidence after the attack (orange: wrong)."
            if let record = r.galleries.first(where: { $0.attack == g.attack }) { caption += " " + galleryCounts(record) }
            out.append(.init(kind: .gallery, file: "gallery-\(g.attack).svg", title: title, caption: caption,
                             svg: SVGFigures.gallery(g, classNames: classNames, title: title)))
        }
        if !pictures.saliency.isEmpty {
            let title = "Saliency maps (undefended model)"
            out.append(.init(kind: .saliency, file: "saliency.svg", title: title,
                             caption: "Each row: an image with the model's prediction and confidence (true class below), and |∂logit(true class)/∂x|"
                                + " (Simonyan et al. 2013), the largest over the channels, scaled to its maximum (white).",
                             svg: SVGFigures.saliency(pictures.saliency, classNames: classNames, title: title)))
        }
        return out
    }

    /// What a gallery's rows are: how many fooled the model, failed, or were wrong before the attack.
    static func galleryCounts(_ g: EvaluationResults.Gallery) -> String {
        "Successful attacks first: of the \(g.indices.count) images shown, \(g.fooled) fooled the model, \(g.failed) "
            + "\(g.failed == 1 ? "was" : "were") still classified right after the attack (failed), and \(g.alreadyWrong) "
            + "\(g.alreadyWrong == 1 ? "was" : "were") already misclassified before it."
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

    /// Merges shard folders into `out`: results.json and the report, its figures drawn again from the shards'
    /// pictures.json (a folder without one contributes numbers only). `out` may be one of the shards (or a single
    /// folder: its report written again by this version's code).
    @discardableResult
    public static func merge(_ dirs: [String], into out: String) throws -> EvaluationResults {
        let parts = try dirs.map(read)
        try checkSameEnvironment(dirs)
        let merged = try EvaluationResults.merge(parts.map(\.results))
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try copyHardenedFiles(merged, from: dirs, to: out)
        let kept = try dirs.compactMap(readPictures)
        var timings: [String: Double] = [:]
        for (i, p) in parts.enumerated() { for (k, v) in p.timings { timings["shard \(i) \(k)"] = v } }
        try write(merged, pictures: ReportPictures.merge(kept.map(\.pictures)), to: out,
                  classNames: kept.first { !$0.pictures.isEmpty }?.classNames ?? kept.first?.classNames ?? [], timings: timings)
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

    // MARK: the headline

    /// The report's opening facts, each nil when the run has nothing for it. Markdown joins them into the first
    /// lines; the HTML shows them as the summary box.
    struct Headline {
        /// What was evaluated (Markdown: may hold `code`).
        var model: String
        /// "clean accuracy 97.0%".
        var clean: String?
        /// The strongest attack's robust accuracy at the table's ε: AutoAttack when it ran, else PGD.
        var attack: String?
        /// The most robust defense by worst case (or that none beat the undefended model).
        var best: String?
        /// The hardened models written in the model's own format.
        var hardened: String?
    }

    static func headlineFacts(_ r: EvaluationResults) -> Headline {
        let s = r.settings
        var h = Headline(model: "")
        if let m = s.model {
            let shape = m.inputShape.map(String.init).joined(separator: "×")
            var what = "`\(m.file)` (\(m.format)"
            if let a = m.architecture { what += ", built-in architecture \(a)" }
            if let o = m.opsets { what += ", opset " + o.sorted { $0.key < $1.key }.map { $0.key.isEmpty ? "\($0.value)" : "\($0.key) \($0.value)" }.joined(separator: ", ") }
            what += "), input \(shape), SHA-256 \(m.sha256.prefix(16))…"
            if let p = m.preprocessing { what += "; preprocessing added: \(p)" }
            h.model = what
        } else {
            h.model = "AdvKit's built-in architecture, trained here on \(s.dataset)"
        }
        if let clean = r.cleanAccuracy["none"] { h.clean = "clean accuracy \(pct(clean))" }
        if let aa = r.whiteBox.first(where: { $0.defense == "none" && $0.attack == "autoattack" }) {
            var budget = ""
            if case let .autoattack(steps, queries)? = s.attacks.first(where: { $0.name == "autoattack" }), steps != 100 || queries != 5000 {
                budget = " (at \(steps) steps and \(queries) Square queries, not the paper's 100 and 5,000)"
            }
            h.attack = "AutoAttack (standard) robust accuracy at L∞ ε = \(s.epsilon)\(budget): \(pct(aa.robustAccuracy))"
        } else if let pgd = r.whiteBox.first(where: { $0.defense == "none" && $0.attack == "pgd" }) {
            h.attack = "PGD robust accuracy at L∞ ε = \(s.epsilon): \(pct(pgd.robustAccuracy)) (AutoAttack not run)"
        }
        // The best defense: the highest worst case among those whose every cell is adaptive (a † cell is an upper
        // bound, so it cannot make a defense "best").
        let measured = r.worstCase.filter { d, _ in d != "none" && !r.whiteBox.contains { $0.defense == d && !$0.adaptive } }
        let undefendedWorst = r.worstCase["none"]
        if let best = measured.max(by: { ($0.value, $1.key) < ($1.value, $0.key) }), let none = undefendedWorst, best.value <= none {
            h.best = "no defense raised the worst case above the undefended model's \(pct(none))"
        } else if let best = measured.max(by: { ($0.value, $1.key) < ($1.value, $0.key) }) {
            var b = "best defense by worst case: \(best.key), \(pct(best.value)) (clean \(pct(r.cleanAccuracy[best.key])))"
            if let none = r.worstCase["none"] { b += " against \(pct(none)) undefended" }
            if let file = r.models.first(where: { $0.name == best.key })?.hardenedFile { b += "; hardened model: `\(file)`" }
            h.best = b
        }
        let hardened = r.models.compactMap { m in m.hardenedFile.map { "\(m.name) → `\($0)`" } }
        if !hardened.isEmpty { h.hardened = hardened.joined(separator: ", ") }
        return h
    }

    /// The report's first lines: what was evaluated, and the headline numbers.
    static func headline(_ r: EvaluationResults) -> String {
        let h = headlineFacts(r)
        var out = "**Model evaluated:** \(h.model).\n\n"
        let lines = [h.clean, h.attack, h.best].compactMap { $0 }
        if !lines.isEmpty { out += "**Headline:** " + lines.joined(separator: "; ") + ".\n\n" }
        if let hardened = h.hardened {
            out += "Hardened models, in the model's own format (fine-tuned from its weights): " + hardened + ".\n\n"
        }
        return out
    }

    static func pct(_ x: Double?) -> String { x.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }
    static func num(_ x: Double?) -> String { x.map { String(format: "%.3f", $0) } ?? "–" }

    /// What was run, in one paragraph.
    static func settingsLine(_ r: EvaluationResults) -> String {
        let s = r.settings
        var out = "AdvKit \(AdvKitVersion.string). Dataset \(s.dataset), \(s.limit) test images, L∞ ε = \(s.epsilon) for the tables, PGD \(s.pgdSteps) steps"
        out += s.model == nil ? ", models trained on \(s.trainImages) images for \(s.epochs) epoch(s)"
            : ", trained defenses fine-tuned from the model's weights on \(s.trainImages) images for \(s.epochs) epoch(s) at learning rate \(s.learningRateValue)"
        out += ", seed \(s.seed)\(s.quick ? " (--quick)" : "")."
        return out
    }

    static let shareMeaning = "A number is the share of test images the defended model still classifies correctly (or flags, for a defense with a detector)."

    // MARK: the tables, as data (Markdown and HTML draw the same rows)

    /// A table cell: its text, the number it sorts by (nil: by its text), and the sanity checks (indices into
    /// `EvaluationResults.sanity`) that warn about it.
    struct TableCell {
        var text: String
        var value: Double?
        var warnings: [Int] = []
    }

    struct Table {
        var id: String
        var header: [String]
        var rows: [[TableCell]]

        func markdown() -> String {
            var out = "| " + header.joined(separator: " | ") + " |\n|" + String(repeating: "---|", count: header.count) + "\n"
            for row in rows { out += "| " + row.map(\.text).joined(separator: " | ") + " |\n" }
            return out
        }
    }

    /// Where each failed sanity check belongs, as "table|defense|column" → indices into `r.sanity`: a curve's checks
    /// on the ε cell they name, PGD's checks on the white-box PGD cell, a black-box check on its cell, any other on
    /// the defense's name in the white-box table.
    static func warningPlaces(_ r: EvaluationResults) -> [String: [Int]] {
        var places: [String: [Int]] = [:]
        for (i, c) in r.sanity.enumerated() where !c.passed {
            var key = "white|\(c.defense)|defense"
            if c.check == "robust accuracy falls near 0 at a large epsilon", r.curves.contains(where: { $0.defense == c.defense && $0.attack == "pgd" }) {
                key = "curves|\(c.defense)|pgd eps \(r.settings.epsilons.count - 1)"
            } else if let curve = r.curves.first(where: { $0.defense == c.defense && $0.riseCheck().check == c.check }) {
                key = "curves|\(c.defense)|\(curve.attack) eps \(curve.rise()?.to ?? 0)"
            } else if c.check == "more PGD steps do not raise accuracy" || c.check == "the loss rises along the attack",
                      r.whiteBox.contains(where: { $0.defense == c.defense && $0.attack == "pgd" }) {
                key = "white|\(c.defense)|pgd"
            } else if let cell = r.blackBox.first(where: {
                $0.defense == c.defense && c.check == "black-box does not beat white-box (\($0.attack.uppercased()), \($0.form))"
            }) {
                key = "black|\(c.defense)|\(blackBoxColumn(cell).key)"
            }
            places[key, default: []].append(i)
        }
        return places
    }

    /// A black-box cell's column: transfer cells by surrogate, query attacks by attack.
    static func blackBoxColumn(_ c: EvaluationResults.Cell) -> (key: String, label: String) {
        let label = c.attack == "pgd" ? "PGD \(c.form)" : c.attack == "square" ? "Square (scores)" : "HopSkipJump (labels)"
        return (c.attack == "pgd" ? c.form : c.attack, label)
    }

    static func percentCell(_ x: Double?, mark: String = "", warnings: [Int] = []) -> TableCell {
        TableCell(text: pct(x) + mark, value: x.map { $0 * 100 }, warnings: warnings)
    }

    static func whiteBoxTable(_ r: EvaluationResults, _ places: [String: [Int]]) -> Table {
        let attacks = r.settings.attacks.map(\.name)
        var rows: [[TableCell]] = []
        for d in r.settings.defenses.map(\.name) {
            let row = attacks.compactMap { a in r.whiteBox.first { $0.defense == d && $0.attack == a } }
            var cells = [TableCell(text: d, warnings: places["white|\(d)|defense"] ?? []), percentCell(r.cleanAccuracy[d])]
            cells += attacks.map { a in
                let c = r.whiteBox.first { $0.defense == d && $0.attack == a }
                return percentCell(c?.robustAccuracy, mark: c.map { $0.adaptive ? "" : " †" } ?? "", warnings: places["white|\(d)|\(a)"] ?? [])
            }
            cells += [percentCell(r.worstCase[d]), TableCell(text: forms(row))]
            rows.append(cells)
        }
        return Table(id: "white-box", header: ["defense", "clean"] + attacks + ["worst case", "attack form"], rows: rows)
    }

    static func blackBoxTable(_ r: EvaluationResults, _ places: [String: [Int]]) -> Table {
        // One column per attack and form (a query attack's form names what it saw: the same for every defense
        // but those with a detector, which it does not see).
        var columns: [(key: String, label: String)] = []
        for c in r.blackBox {
            let col = blackBoxColumn(c)
            if !columns.contains(where: { $0.label == col.label }) { columns.append(col) }
        }
        let rows = r.settings.defenses.map(\.name).map { d in
            [TableCell(text: d)] + columns.map { col in
                percentCell(r.blackBox.first { $0.defense == d && blackBoxColumn($0).key == col.key }?.robustAccuracy,
                            warnings: places["black|\(d)|\(col.key)"] ?? [])
            }
        }
        return Table(id: "black-box", header: ["defense"] + columns.map(\.label), rows: rows)
    }

    static func neededTable(_ r: EvaluationResults) -> Table {
        let rows = r.perturbationNeeded.map { n in
            [TableCell(text: n.defense)] + [n.deepfoolL2, n.deepfoolLinf, n.cwL2].map { TableCell(text: num($0), value: $0) }
        }
        return Table(id: "perturbation-needed", header: ["defense", "DeepFool L2", "DeepFool L∞", "C&W L2"], rows: rows)
    }

    static func curvesTable(_ r: EvaluationResults, _ places: [String: [Int]]) -> Table {
        let rows = r.curves.map { c in
            [TableCell(text: c.defense), TableCell(text: c.attack + (c.adaptive ? "" : " †"))]
                + c.robustAccuracy.enumerated().map { percentCell($0.element, warnings: places["curves|\(c.defense)|\(c.attack) eps \($0.offset)"] ?? []) }
                + [TableCell(text: c.form)]
        }
        return Table(id: "curves", header: ["defense", "attack"] + r.settings.epsilons.map { "ε \(SVG.number($0))" } + ["attack form"], rows: rows)
    }

    /// Under the white-box table: what the worst case counts, AutoAttack's budget and per-component counts, the † note.
    static func whiteBoxNotes(_ r: EvaluationResults) -> [String] {
        let s = r.settings
        var notes = ["Worst case: an image counts as robust only if every attack above (DeepFool and C&W aside: they always"
            + " succeed by construction) and every black-box attack (transfer and query-based) failed on it."]
        if case let .autoattack(steps, queries)? = s.attacks.first(where: { $0.name == "autoattack" }) {
            let order = ["apgd-ce", "apgd-t", "apgd-dlr", "fab-t", "square"]
            let parts = r.whiteBox.compactMap { c -> String? in
                guard let broken = c.brokenBy else { return nil }
                let named = broken.sorted { (order.firstIndex(of: $0.key) ?? 9, $0.key) < (order.firstIndex(of: $1.key) ?? 9, $1.key) }
                return "\(c.defense) " + named.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            }
            var aa = "AutoAttack ran at \(steps) steps and \(queries) Square queries"
            aa += steps == 100 && queries == 5000 ? " (the paper's budget)" : " (the paper: 100 and 5,000)"
            let randomised = r.whiteBox.filter { $0.attack == "autoattack" && $0.form.contains("AutoAttack rand") }.map(\.defense)
            if !randomised.isEmpty {
                aa += "; the randomised defense\(randomised.count == 1 ? "" : "s") (\(randomised.joined(separator: ", "))) got its rand version"
            }
            aa += ". Images each component broke, of those the earlier ones left: "
            notes.append(aa + parts.joined(separator: "; ") + ".")
        }
        if r.whiteBox.contains(where: { !$0.adaptive }) { notes.append(notAdaptive) }
        return notes
    }

    static func blackBoxNote(_ r: EvaluationResults) -> String {
        let s = r.settings
        var out = "The surrogates were trained by the attacker on the other half of the training data, which the defenders never saw."
        let queries = s.queryAttacks.map { a -> String in
            switch a {
            case let .square(q): return "Square (L∞ ε \(s.epsilon), \(q) queries per image, scores only)"
            case let .hopSkipJump(q): return "HopSkipJump (L∞, \(q) queries per image, labels only; broken when it found an image within ε)"
            default: return a.name
            }
        }
        if !queries.isEmpty {
            out += " The query-based attacks see only the defended model's outputs, never a gradient: " + queries.joined(separator: "; ")
            out += ". A defense's detector flags count as robust; these attacks do not see it."
        }
        return out
    }

    /// Sections other files add to the report, as Markdown (e.g. `certifiedSection(r)` from
    /// Report+Certified.swift, one line in the list below): report.md appends them after the curves, report.html shows them at the same place
    /// (`htmlFromMarkdown`: headings, paragraphs, `- ` lists and pipe tables).
    static func extraSections(_ r: EvaluationResults) -> [String] {
        let sections: [String] = [
            // One line per file's section, e.g. certifiedSection(r),
            certifiedSection(r),
        ]
        return sections.filter { !$0.isEmpty }
    }

    static func markdown(_ r: EvaluationResults, figures: [Figure], timings: [String: Double]) -> String {
        let places = warningPlaces(r)
        var out = "# AdvKit robustness report\n\n"
        out += headline(r)
        out += settingsLine(r) + "\n" + shareMeaning + "\n\n"
        if !r.whiteBox.isEmpty {
            out += "## White-box: attack × defense (adaptive attacks where the defense has one)\n\n"
            out += whiteBoxTable(r, places).markdown() + "\n"
            out += whiteBoxNotes(r).joined(separator: "\n\n") + "\n\n"
        }
        if !r.blackBox.isEmpty {
            out += "## Black-box: PGD transferred from the attacker's surrogates, and query-based attacks on the outputs alone\n\n"
            out += blackBoxTable(r, places).markdown() + "\n" + blackBoxNote(r) + "\n\n"
        }
        if !r.perturbationNeeded.isEmpty {
            out += "## Perturbation needed to fool the model (median over fooled images)\n\n" + neededTable(r).markdown() + "\n"
        }
        if !r.curves.isEmpty {
            out += "## Robust accuracy against epsilon\n\n"
            for f in figures where f.kind == .curves { out += "![\(f.title)](\(f.file))\n\n\(f.caption)\n\n" }
            out += curvesTable(r, places).markdown()
            if r.curves.contains(where: { !$0.adaptive }) { out += "\n" + notAdaptive + "\n" }
            out += "\n"
        }
        for section in extraSections(r) { out += section.hasSuffix("\n\n") ? section : section + "\n\n" }
        let failed = r.sanity.filter { !$0.passed }
        out += "## Sanity checks (gradient masking)\n\n"
        out += failed.isEmpty ? "All \(r.sanity.count) checks passed.\n\n" : "**\(failed.count) of \(r.sanity.count) checks warn:**\n\n"
        for c in failed { out += "- ⚠ \(c.defense): \(c.check) — \(c.detail)\n" }
        if !failed.isEmpty { out += "\n" }
        out += "<details><summary>every check</summary>\n\n"
        for c in r.sanity { out += "- \(c.passed ? "ok" : "WARN") \(c.defense): \(c.check) — \(c.detail)\n" }
        out += "\n</details>\n\n## Pictures\n\n"
        for f in figures where f.kind != .curves { out += "### \(f.title)\n\n![\(f.title)](\(f.file))\n\n\(f.caption)\n\n" }
        if let total = timings["total"] { out += String(format: "Evaluation time: %.0f s (results.json has every timing).\n", total) }
        return out
    }
}
