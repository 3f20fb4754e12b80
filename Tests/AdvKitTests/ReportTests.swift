@_spi(Support) @_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// The report as a reader sees it: the curves' SVG (axis titles, ticks on the ε measured, a legend entry per
/// defense, a tooltip per point with the exact value), the labelled galleries, report.html self-contained with
/// sortable tables and each warning beside its cell, and pictures.json carrying the figures through merge.
final class ReportTests: XCTestCase {
    /// A small real evaluation (the undefended model and the noise defense, white-box), made once for the class.
    private static var made: (dir: String, results: EvaluationResults, pictures: ReportPictures)?

    private static func settings() -> EvaluationSettings {
        var s = EvaluationSettings.quickSettings()
        s.defenses = EvaluationSettings.specs(["none", "noise"], epsilon: s.epsilon, quick: true)
        s.attacks = [.fgsm, .pgd, .deepfool(steps: 20)]
        s.queryAttacks = []
        s.threat = "white"
        s.limit = 16
        s.trainImages = 200
        s.epochs = 1
        s.pgdSteps = 3
        s.epsilons = [0, 0.05, 0.1, 0.3]
        return s
    }

    static let classNames = ["zero <0>", "one & only", "\"two\"", "three"]

    private func evaluate(_ dir: String) throws -> (EvaluationResults, ReportPictures) {
        let train = squaresDataset(count: 300, classes: 4, size: 28, seed: 1), test = squaresDataset(count: 16, classes: 4, size: 28, seed: 2)
        let e = try Evaluator(settings: Self.settings(), train: train, test: test, outputDirectory: dir)
        e.progressStyle = .silent
        let r = try e.run()
        return (r, e.reportPictures())
    }

    private func made() throws -> (dir: String, results: EvaluationResults, pictures: ReportPictures) {
        if let m = Self.made { return m }
        let dir = temporaryDirectory("report")
        let (r, pictures) = try evaluate(dir)
        try ReportWriter.write(r, pictures: pictures, to: dir, classNames: Self.classNames, timings: ["total": 1.5])
        Self.made = (dir, r, pictures)
        return Self.made!
    }

    /// A number as the figures print it: up to 4 decimals, no trailing zeros.
    private func short(_ v: Double) -> String {
        var s = String(format: "%.4f", v)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }

    private func text(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    /// The substrings between `open` and `close`, in order.
    private func between(_ s: String, _ open: String, _ close: String) -> [String] {
        var out: [String] = [], rest = s[...]
        while let a = rest.range(of: open), let b = rest[a.upperBound...].range(of: close) {
            out.append(String(rest[a.upperBound..<b.lowerBound]))
            rest = rest[b.upperBound...]
        }
        return out
    }

    // MARK: the curves

    func testTheCurvesHaveAxisTitlesTicksOnTheEpsilonsALegendAndATooltipPerPoint() throws {
        let eps = [0, 0.025, 0.05, 0.1, 0.3]
        let series = [
            SVGPlot.Series(name: "none", points: eps.enumerated().map { .init(x: $0.element, y: [0.9, 0.6, 0.35, 0.125, 0][$0.offset]) }, clean: 0.9),
            SVGPlot.Series(name: "pgd-at", points: eps.enumerated().map { .init(x: $0.element, y: [0.85, 0.8, 0.7, 0.5625, 0.05][$0.offset]) }, clean: 0.85),
            SVGPlot.Series(name: "a<b & \"c\"", points: eps.map { .init(x: $0, y: 0.5) }, clean: nil, mark: " †"),
        ]
        let svg = SVGPlot.chart(title: "PGD: robust accuracy", series: series, xTicks: eps)
        XCTAssertTrue(svg.contains(">ε (L∞)</text>"), "x axis title")
        XCTAssertTrue(svg.contains(">robust accuracy (%)</text>"), "y axis title")
        // The x tick labels are the ε measured, in order, and nothing else.
        let ticks = between(svg, "class=\"xtick\"", "</text>").map { String($0.split(separator: ">").last ?? "") }
        XCTAssertEqual(ticks, ["0", "0.025", "0.05", "0.1", "0.3"])
        XCTAssertEqual(between(svg, "class=\"ytick\"", "</text>").map { String($0.split(separator: ">").last ?? "") },
                       ["0", "20", "40", "60", "80", "100"])
        // A legend entry per series, naming it (escaped), with the clean accuracy where given.
        let legend = between(svg, "<g class=\"legend-entry\">", "</g>")
        XCTAssertEqual(legend.count, 3)
        XCTAssertTrue(legend[0].contains(">none <tspan fill=\"#555\">(clean 90.0%)</tspan>"), legend[0])
        XCTAssertTrue(legend[1].contains(">pgd-at <tspan fill=\"#555\">(clean 85.0%)</tspan>"), legend[1])
        XCTAssertTrue(legend[2].contains(">a&lt;b &amp; &quot;c&quot; †</text>"), legend[2])
        XCTAssertFalse(svg.contains("a<b") || svg.contains("\"c\""), "the name is escaped everywhere")
        // One tooltip per point, with its exact value and ε.
        let points = between(svg, "<g class=\"point\">", "</g>")
        XCTAssertEqual(points.count, 15)
        let titles = points.map { between($0, "<title>", "</title>") }
        XCTAssertTrue(titles.allSatisfy { $0.count == 1 })
        XCTAssertEqual(titles[3].first, "none: 12.5% at ε = 0.1")
        XCTAssertEqual(titles[8].first, "pgd-at: 56.25% at ε = 0.1")
        XCTAssertEqual(titles[14].first, "a&lt;b &amp; &quot;c&quot; †: 50% at ε = 0.3")
        // The clean accuracy marked on the y axis, for the series that have one.
        XCTAssertEqual(between(svg, "<g class=\"clean\">", "</g>").count, 2)
        // Three styles that differ; a second round of colours changes the dash and the marker too.
        let styles = (0..<14).map { SVGPlot.style($0) }
        XCTAssertEqual(Set(styles.map { "\($0.color)|\($0.dash)|\($0.marker)|\($0.filled)" }).count, 14)
        XCTAssertNotEqual(styles[0].dash, styles[7].dash)
        XCTAssertNotEqual(styles[0].marker, styles[7].marker)
    }

    func testCrowdedTicksTurnAndNothingLeavesTheFigure() throws {
        let eps = (0...12).map { Double($0) / 255 }
        let svg = SVGPlot.chart(title: "t", series: [.init(name: "none", points: eps.map { .init(x: $0, y: 1 - $0 * 3) })], xTicks: eps)
        XCTAssertEqual(between(svg, "class=\"xtick\"", "</text>").count, 13)
        XCTAssertTrue(svg.contains("rotate(-45"), "labels 0.0039 apart would overlap flat")
        // Every coordinate inside the viewBox.
        let box = between(svg, "viewBox=\"", "\"")[0].split(separator: " ").compactMap { Double($0) }
        for y in between(svg, " y=\"", "\"").compactMap(Double.init) { XCTAssertLessThanOrEqual(y, box[3]) }
        for x in between(svg, " x=\"", "\"").compactMap(Double.init) { XCTAssertLessThanOrEqual(x, box[2]) }
    }

    // MARK: a report from a small real evaluation

    func testTheGalleriesAreLabelledWithClassNamesAndBothConfidences() throws {
        let (dir, r, pictures) = try made()
        XCTAssertEqual(pictures.galleries.map(\.attack), ["fgsm", "pgd", "deepfool"])
        XCTAssertEqual(pictures.galleries.map(\.epsilon), [0.1, 0.1, nil])
        for g in pictures.galleries {
            let record = try XCTUnwrap(r.galleries.first { $0.attack == g.attack })
            XCTAssertEqual(g.rows.map(\.index), record.indices, "the rows are the gallery's picked images, fooled first")
            XCTAssertEqual(g.rows.map(\.outcome), record.outcomes)
            let svg = try text(dir + "/gallery-\(g.attack).svg")
            XCTAssertTrue(svg.hasPrefix("<?xml") && svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""), "a standalone SVG file")
            let rows = between(svg, "<g class=\"gallery-row\"", "</g>")
            XCTAssertEqual(rows.count, g.rows.count)
            for (row, drawn) in zip(g.rows, rows) {
                let name = { (k: Int) in ReportTests.classNames[k].replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                    .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;") }
                let clean = String(format: "%.1f", row.cleanConfidence * 100), adv = String(format: "%.1f", row.adversarialConfidence * 100)
                func pct(_ s: String) -> String { s + "%" }
                XCTAssertTrue(drawn.contains(">\(name(row.cleanPrediction)) \(pct(clean))</text>"), "clean prediction and confidence: \(drawn.suffix(900))")
                XCTAssertTrue(drawn.contains(">true: \(name(row.label)) · #\(row.index)</text>"), "true class")
                XCTAssertTrue(drawn.contains(">\(name(row.adversarialPrediction)) \(pct(adv))</text>"), "adversarial prediction and confidence")
                XCTAssertTrue(drawn.contains(">\(row.outcome)</text>"))
                XCTAssertTrue(drawn.contains(">×\(short((row.amplification * 10).rounded() / 10))</text>"), "the amplification is stated")
                XCTAssertEqual(drawn.components(separatedBy: "<image ").count - 1, 3, "x, δ, x′")
                XCTAssertTrue(drawn.contains("style=\"image-rendering:pixelated\""))
                // The confidences are real: the clean image's is the softmax of the class predicted, in (1/K, 1].
                XCTAssertGreaterThanOrEqual(row.cleanConfidence, 0.25 - 1e-6)
                XCTAssertLessThanOrEqual(row.cleanConfidence, 1)
                if let eps = g.epsilon { XCTAssertLessThanOrEqual(row.linf, Double(eps) + 1e-6, "‖δ‖∞ ≤ ε") }
                XCTAssertEqual(row.amplification, 0.5 / max(row.linf, 1e-6), accuracy: 1e-9)
            }
            let embedded = between(svg, "href=\"data:image/png;base64,", "\"")
            XCTAssertEqual(embedded.count, 3 * g.rows.count)
            for b64 in embedded {
                let img = try PNG.decode(try XCTUnwrap(Data(base64Encoded: b64)))
                XCTAssertEqual([img.width, img.height], [84, 84], "the test image's pixels, each a 3x3 square, shown at that size")
            }
        }
        // FGSM moves every pixel by ε (unless clipped), so the amplification is 0.5/ε = 5 on the rows it changed.
        let fgsm = pictures.galleries[0].rows
        XCTAssertTrue(fgsm.contains { abs($0.amplification - 5) < 1e-3 }, "\(fgsm.map(\.amplification))")
        let saliency = try text(dir + "/saliency.svg")
        XCTAssertEqual(between(saliency, "<g class=\"saliency-row\"", "</g>").count, 6)
        XCTAssertTrue(saliency.contains(">true: "))
    }

    func testTheHTMLIsSelfContainedWithASummarySortableTablesAndTheFiguresInline() throws {
        let (dir, r, pictures) = try made()
        let html = try text(dir + "/report.html")
        XCTAssertFalse(html.contains("http://") || html.contains("https://"), "no URL at all")
        for attribute in ["src=\"", "href=\""] {
            for target in between(html, attribute, "\"") {
                XCTAssertTrue(target.hasPrefix("data:image/png;base64,") || target.hasPrefix("#"), "\(attribute)\(target.prefix(40))")
            }
        }
        XCTAssertFalse(html.contains("<link") || html.contains("@import") || html.contains("url("), "no stylesheet or font fetched")
        XCTAssertTrue(html.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"))
        // The summary box: the headline's facts.
        let summary = try XCTUnwrap(between(html, "<section class=\"summary\"", "</section>").first)
        XCTAssertTrue(summary.contains("<dt>Undefended</dt><dd>clean accuracy \(String(format: "%.1f%%", r.cleanAccuracy["none"]! * 100))</dd>"), summary)
        let pgd = r.whiteBox.first { $0.defense == "none" && $0.attack == "pgd" }!.robustAccuracy
        XCTAssertTrue(summary.contains("<dt>Strongest attack</dt><dd>PGD robust accuracy at L∞ ε = 0.1: \(String(format: "%.1f%%", pgd * 100))"), summary)
        XCTAssertTrue(summary.contains("<dt>Warnings</dt>"))
        // Sortable tables, one per table of the report, each in a sideways-scrolling box.
        for id in ["white-box", "perturbation-needed", "curves"] {
            XCTAssertTrue(html.contains("<div class=\"scroll\"><table class=\"sortable\" id=\"table-\(id)\"><thead>"), id)
        }
        XCTAssertEqual(html.components(separatedBy: "<table class=\"sortable\"").count - 1, 3, "white-box, needed, curves (no black-box run)")
        XCTAssertTrue(html.contains("<script>(function(){") && html.contains("table.setAttribute(\"data-sortable\",\"ready\")"))
        XCTAssertTrue(html.contains("<td data-sort=\"\(short(pgd * 100))\">\(String(format: "%.1f%%", pgd * 100))"), "cells sort by their number")
        // The figures inline: two curve panels naming every defense in their legend, three galleries, the saliency maps.
        XCTAssertEqual(html.components(separatedBy: "<svg class=\"advkit-curves\"").count - 1, 2)
        for panel in between(html, "<svg class=\"advkit-curves\"", "</svg>") {
            let legend = between(panel, "<g class=\"legend-entry\">", "</g>")
            XCTAssertEqual(legend.count, 2)
            XCTAssertTrue(legend[0].contains(">none <tspan") && legend[1].contains(">noise <tspan"))
        }
        XCTAssertEqual(html.components(separatedBy: "<svg class=\"advkit-gallery\"").count - 1, pictures.galleries.count)
        XCTAssertEqual(html.components(separatedBy: "<svg class=\"advkit-saliency\"").count - 1, 1)
        XCTAssertEqual(between(html, "href=\"data:image/png;base64,", "\"").count, 3 * 6 * 3 + 2 * 6, "every picture's pixels inline")
        XCTAssertTrue(["zero &lt;0&gt;", "one &amp; only", "&quot;two&quot;", ">three"].contains { html.contains($0) }, "class names drawn")
        XCTAssertFalse(html.contains("zero <0>") || html.contains("\"two\"") || html.contains("one & only"), "and escaped")
        // The files for papers, and report.md pointing at them.
        let md = try text(dir + "/report.md")
        for f in ["curves-fgsm.svg", "curves-pgd.svg", "gallery-fgsm.svg", "gallery-pgd.svg", "gallery-deepfool.svg", "saliency.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/" + f), f)
            XCTAssertTrue(md.contains("](\(f))"), "report.md shows \(f)")
        }
        XCTAssertTrue(md.contains("| none | "), "report.md keeps its tables")
    }

    func testEachWarningSitsBesideTheCellItConcerns() throws {
        let (_, base, pictures) = try made()
        var r = base
        func check(_ defense: String, _ name: String, _ detail: String) throws -> EvaluationResults.Check {
            let json = ["defense": defense, "check": name, "passed": false, "detail": detail] as [String: Any]
            return try JSONDecoder().decode(EvaluationResults.Check.self, from: JSONSerialization.data(withJSONObject: json))
        }
        r.sanity = [try check("noise", "more PGD steps do not raise accuracy", "PGD: 3 steps 40.0%, 6 steps 45.0% <&>"),
                    try check("none", "robust accuracy falls near 0 at a large epsilon", "PGD at eps 0.3 leaves 30.0%"),
                    try check("noise", "something a later check adds", "detail")] + base.sanity.filter(\.passed)
        let dir = temporaryDirectory("warnings")
        try ReportWriter.write(r, pictures: pictures, to: dir, classNames: Self.classNames)
        let html = try text(dir + "/report.html")
        func row(_ table: String, _ defense: String, _ attack: String? = nil) throws -> [String] {
            let body = try XCTUnwrap(between(html, "id=\"table-\(table)\"", "</table>").first)
            let rows = between(body, "<tr>", "</tr>").filter { r in
                r.hasPrefix("<td class=\"word\">\(defense)") && (attack.map { r.contains("<td class=\"word\">\($0)</td>") } ?? true)
            }
            return between(try XCTUnwrap(rows.first, "\(table) \(defense)"), "<td", "</td>")
        }
        // The PGD steps check on the noise defense's white-box PGD cell (column 3: defense, clean, fgsm, pgd).
        let noise = try row("white-box", "noise")
        XCTAssertTrue(noise[3].contains("<a class=\"warn\" id=\"mark-0\" href=\"#warning-0\""), noise[3])
        XCTAssertTrue(noise[3].contains("title=\"more PGD steps do not raise accuracy: PGD: 3 steps 40.0%, 6 steps 45.0% &lt;&amp;&gt;\""))
        XCTAssertEqual(noise.filter { $0.contains("class=\"warn\"") }.count, 2, "that cell and the defense's name (the unplaced check)")
        XCTAssertTrue(noise[0].contains("id=\"mark-2\""), "a check with no cell of its own marks the defense")
        // The large-ε check on the undefended PGD curve's last ε.
        let curve = try row("curves", "none", "pgd")
        XCTAssertTrue(curve[2 + 3].contains("id=\"mark-1\""), curve.joined(separator: " | "))
        XCTAssertEqual(curve.filter { $0.contains("class=\"warn\"") }.count, 1)
        // Each warning listed with an anchor, linking back to its cell; the summary links to them.
        for i in 0..<3 {
            XCTAssertTrue(html.contains("<li id=\"warning-\(i)\">⚠ "), "\(i)")
            XCTAssertTrue(html.contains("<a href=\"#mark-\(i)\">(its cell)</a>"), "\(i)")
            XCTAssertTrue(html.contains("<li><a href=\"#warning-\(i)\">⚠ "), "the summary lists warning \(i)")
        }
        XCTAssertTrue(html.contains("3 of \(r.sanity.count) sanity checks warn"))
    }

    func testMergeDrawsTheFiguresAgainFromPicturesJSON() throws {
        let (dir, r, pictures) = try made()
        let out = temporaryDirectory("merged")
        let merged = try ReportWriter.merge([dir], into: out)
        XCTAssertEqual(merged, r)
        for f in ["gallery-fgsm.svg", "gallery-pgd.svg", "gallery-deepfool.svg", "saliency.svg", "curves-pgd.svg", "gallery-pgd.png"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/" + f)), try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f)),
                           "\(f): drawn again, the same bytes")
        }
        struct Kept: Decodable { var classNames: [String]; var pictures: ReportPictures }
        let kept = try JSONDecoder().decode(Kept.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/pictures.json")))
        XCTAssertEqual(kept.pictures, pictures)
        XCTAssertEqual(kept.classNames, Self.classNames)
        let html = try text(out + "/report.html")
        XCTAssertEqual(html.components(separatedBy: "<svg class=\"advkit-gallery\"").count - 1, 3, "the merged report shows the galleries")
    }

    /// A journal unit written before galleries kept the clean confidence (no "cleanConf") still decodes; the
    /// pictures then compute it from the undefended model, to the value the attack recorded.
    func testAJournalWithoutCleanConfidencesStillGivesThem() throws {
        let (dir, _, pictures) = try made()
        let copy = temporaryDirectory("old-journal")
        try FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: dir, toPath: copy)
        var stripped = 0
        for path in try FileManager.default.subpathsOfDirectory(atPath: copy + "/progress") where path.contains("white-none-") {
            let url = URL(fileURLWithPath: copy + "/progress/" + path)
            var doc = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            var value = try XCTUnwrap(doc["value"] as? [String: Any])
            var gallery = try XCTUnwrap(value["gallery"] as? [String: Any])
            XCTAssertNotNil(gallery.removeValue(forKey: "cleanConf"), "a new unit keeps the clean confidences")
            value["gallery"] = gallery
            doc["value"] = value
            try JSONSerialization.data(withJSONObject: doc).write(to: url)
            stripped += 1
        }
        XCTAssertEqual(stripped, 3)
        let train = squaresDataset(count: 300, classes: 4, size: 28, seed: 1), test = squaresDataset(count: 16, classes: 4, size: 28, seed: 2)
        let e = try Evaluator(settings: Self.settings(), train: train, test: test, outputDirectory: copy)
        e.progressStyle = .silent
        _ = try e.run()
        XCTAssertEqual(e.computedUnits, 0, "every unit reused, the stripped ones included")
        let again = e.reportPictures()
        for (g, h) in zip(again.galleries, pictures.galleries) {
            for (a, b) in zip(g.rows, h.rows) {
                // The same model on the same images, in another batch: float32 sums in another order.
                XCTAssertEqual(a.cleanConfidence, b.cleanConfidence, accuracy: 1e-5)
                XCTAssertEqual(a.adversarial, b.adversarial)
            }
        }
    }
}
