import Foundation

// report.html, built from the data: a summary box, sortable tables with each sanity-check warning beside the cell it
// concerns, the figures as inline SVG; self-contained (no URL to fetch: the pixels are data URIs, the style and the
// sorting script inline) and readable at phone width (tables scroll inside their box, figures shrink to fit).
extension ReportWriter {
    static func html(_ r: EvaluationResults, figures: [Figure], timings: [String: Double]) -> String {
        let places = warningPlaces(r)
        var marked = Set<Int>()
        let h = headlineFacts(r)
        let failed = r.sanity.indices.filter { !r.sanity[$0].passed }
        var body = "<h1>AdvKit robustness report</h1>\n"

        // The summary box: the headline's facts as the Markdown states them, and the warnings.
        body += "<section class=\"summary\" aria-label=\"summary\"><dl>\n"
        body += "<dt>Model</dt><dd>\(inline(h.model))</dd>\n"
        if let c = h.clean { body += "<dt>Undefended</dt><dd>\(inline(c))</dd>\n" }
        if let a = h.attack { body += "<dt>Strongest attack</dt><dd>\(inline(a))</dd>\n" }
        if let b = h.best { body += "<dt>Most robust defense</dt><dd>\(inline(b))</dd>\n" }
        if let hardened = h.hardened { body += "<dt>Hardened models</dt><dd>\(inline(hardened))</dd>\n" }
        body += "<dt>Warnings</dt><dd>"
        if failed.isEmpty {
            body += "none: all \(r.sanity.count) sanity checks passed"
        } else {
            body += "<a href=\"#sanity\">\(failed.count) of \(r.sanity.count) sanity checks warn</a> about gradient masking:<ul>"
            for i in failed { body += "<li><a href=\"#warning-\(i)\">⚠ \(SVG.escape(r.sanity[i].defense)): \(SVG.escape(r.sanity[i].check))</a></li>" }
            body += "</ul>"
        }
        body += "</dd>\n</dl></section>\n"
        body += "<p>\(inline(settingsLine(r))) \(inline(shareMeaning)) Click a column's heading to sort by it.</p>\n"

        if !r.whiteBox.isEmpty {
            body += "<h2 id=\"white\">White-box: attack × defense (adaptive attacks where the defense has one)</h2>\n"
            body += tableHTML(whiteBoxTable(r, places), sanity: r.sanity, &marked)
            for n in whiteBoxNotes(r) { body += "<p class=\"note\">\(inline(n))</p>\n" }
        }
        if !r.blackBox.isEmpty {
            body += "<h2 id=\"black\">Black-box: PGD transferred from the attacker's surrogates, and query-based attacks on the outputs alone</h2>\n"
            body += tableHTML(blackBoxTable(r, places), sanity: r.sanity, &marked) + "<p class=\"note\">\(inline(blackBoxNote(r)))</p>\n"
        }
        if !r.perturbationNeeded.isEmpty {
            body += "<h2 id=\"needed\">Perturbation needed to fool the model (median over fooled images)</h2>\n"
            body += tableHTML(neededTable(r), sanity: r.sanity, &marked)
        }
        if !r.curves.isEmpty {
            body += "<h2 id=\"curves\">Robust accuracy against epsilon</h2>\n"
            body += figuresHTML(figures.filter { $0.kind == .curves })
            body += tableHTML(curvesTable(r, places), sanity: r.sanity, &marked)
            if r.curves.contains(where: { !$0.adaptive }) { body += "<p class=\"note\">\(inline(notAdaptive))</p>\n" }
        }
        for section in extraSections(r) { body += htmlFromMarkdown(section) }

        body += "<h2 id=\"sanity\">Sanity checks (gradient masking)</h2>\n"
        body += failed.isEmpty ? "<p>All \(r.sanity.count) checks passed.</p>\n" : "<p><strong>\(failed.count) of \(r.sanity.count) checks warn:</strong></p>\n<ul class=\"warnings\">\n"
        for i in failed {
            let c = r.sanity[i]
            body += "<li id=\"warning-\(i)\">⚠ <strong>\(SVG.escape(c.defense))</strong>: \(SVG.escape(c.check)) — \(SVG.escape(c.detail))"
            if marked.contains(i) { body += " <a href=\"#mark-\(i)\">(its cell)</a>" }
            body += "</li>\n"
        }
        if !failed.isEmpty { body += "</ul>\n" }
        body += "<details><summary>every check</summary><ul>\n"
        for c in r.sanity {
            body += "<li>\(c.passed ? "ok" : "⚠ WARN") \(SVG.escape(c.defense)): \(SVG.escape(c.check)) — \(SVG.escape(c.detail))</li>\n"
        }
        body += "</ul></details>\n"

        let pictures = figures.filter { $0.kind != .curves }
        if !pictures.isEmpty {
            body += "<h2 id=\"pictures\">Pictures</h2>\n" + figuresHTML(pictures)
        }
        body += "<footer><p>Written by AdvKit \(AdvKitVersion.string)."
        if let total = timings["total"] { body += String(format: " Evaluation time: %.0f s (results.json has every timing).", total) }
        body += " The figures are also in this folder as SVG files (curves-&lt;attack&gt;.svg, gallery-&lt;attack&gt;.svg, saliency.svg).</p></footer>\n"
        return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>AdvKit robustness report</title>
        <style>\(style)</style></head><body>
        \(body)<script>\(sortScript)</script>
        </body></html>

        """
    }

    /// A table with its heading cells sortable (`sortScript`), inside a box that scrolls sideways on a narrow window.
    /// A cell that a failed sanity check concerns carries ⚠, linked to the warning, the check in its tooltip.
    static func tableHTML(_ t: Table, sanity: [EvaluationResults.Check], _ marked: inout Set<Int>) -> String {
        let textColumns = Set(t.header.indices.filter { t.header[$0] == "attack form" })
        var s = "<div class=\"scroll\"><table class=\"sortable\" id=\"table-\(t.id)\"><thead><tr>"
        s += t.header.indices.map { j in
            let words = j == 0 || textColumns.contains(j) || t.rows.contains { j < $0.count && $0[j].value == nil && $0[j].text != "–" }
            return "<th scope=\"col\"\(words ? " class=\"word\"" : "")>\(SVG.escape(t.header[j]))</th>"
        }.joined() + "</tr></thead>\n<tbody>\n"
        for row in t.rows {
            s += "<tr>"
            for (j, cell) in row.enumerated() {
                // Words read from the left; numbers (and "–" for none) line up on the right.
                var attributes = textColumns.contains(j) ? " class=\"text\"" : cell.value == nil && cell.text != "–" ? " class=\"word\"" : ""
                if let v = cell.value { attributes += " data-sort=\"\(SVG.number(v))\"" }
                s += "<td\(attributes)>\(SVG.escape(cell.text))"
                for i in cell.warnings {
                    let c = sanity[i]
                    s += "<a class=\"warn\" id=\"mark-\(i)\" href=\"#warning-\(i)\" title=\"\(SVG.escape(c.check + ": " + c.detail))\">⚠</a>"
                    marked.insert(i)
                }
                s += "</td>"
            }
            s += "</tr>\n"
        }
        return s + "</tbody></table></div>\n"
    }

    static func figuresHTML(_ figures: [Figure]) -> String {
        guard !figures.isEmpty else { return "" }
        var s = "<div class=\"figures\">\n"
        for f in figures {
            let id = f.file.replacingOccurrences(of: ".", with: "-")
            // As wide as the SVG drawn (its caption wraps to it), narrower on a narrow window.
            let root = f.svg.prefix { $0 != ">" }
            let width = root.range(of: " width=\"").map { root[$0.upperBound...].prefix { $0 != "\"" } }.map(String.init) ?? "560"
            s += "<figure id=\"\(SVG.escape(id))\" class=\"\(f.kind == .curves ? "curves" : "picture")\" style=\"flex-basis:\(width)px;max-width:\(width)px\">\n\(f.svg)"
            s += "<figcaption>\(inline(f.caption)) <span class=\"file\">(\(SVG.escape(f.file)))</span></figcaption></figure>\n"
        }
        return s + "</div>\n"
    }

    /// Escaped text with the Markdown the report's sentences use: **bold** and `code`.
    static func inline(_ md: String) -> String {
        var out = "", bold = false, code = false
        for ch in SVG.escape(md) {
            out.append(ch)
            if out.hasSuffix("**") && !code {
                out.removeLast(2)
                out += bold ? "</strong>" : "<strong>"
                bold.toggle()
            } else if ch == "`" {
                out.removeLast()
                out += code ? "</code>" : "<code>"
                code.toggle()
            }
        }
        if bold { out += "</strong>" }
        if code { out += "</code>" }
        return out
    }

    /// A section given as Markdown (`extraSections`) as HTML: headings, paragraphs, `- ` lists, pipe tables
    /// (sortable, like the report's own) and <details> lines.
    static func htmlFromMarkdown(_ md: String) -> String {
        var body = "", table: [[String]] = [], inList = false
        var marked = Set<Int>()
        func flushTable() {
            guard let header = table.first else { return }
            let rows = table.dropFirst().map { row in
                row.map { text in
                    TableCell(text: text, value: Double(text.replacingOccurrences(of: "%", with: "").trimmingCharacters(in: .whitespaces)))
                }
            }
            body += tableHTML(Table(id: "extra-\(body.count)", header: header, rows: Array(rows)), sanity: [], &marked)
            table = []
        }
        for line in md.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("|") {
                let cells = line.trimmingCharacters(in: .whitespaces).dropFirst().dropLast().split(separator: "|", omittingEmptySubsequences: false)
                    .map { $0.trimmingCharacters(in: .whitespaces) }
                if !cells.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0 == "-" || $0 == ":" } }) { table.append(cells) }
                continue
            }
            flushTable()
            if inList && !line.hasPrefix("- ") { body += "</ul>\n"; inList = false }
            if line.hasPrefix("### ") { body += "<h3>\(inline(String(line.dropFirst(4))))</h3>\n" }
            else if line.hasPrefix("## ") { body += "<h2>\(inline(String(line.dropFirst(3))))</h2>\n" }
            else if line.hasPrefix("- ") {
                if !inList { body += "<ul>\n"; inList = true }
                body += "<li>\(inline(String(line.dropFirst(2))))</li>\n"
            }
            else if line.hasPrefix("<details") || line.hasPrefix("</details") { body += line + "\n" }
            else if !line.isEmpty { body += "<p>\(inline(line))</p>\n" }
        }
        flushTable()
        if inList { body += "</ul>\n" }
        return body
    }

    static let style = """
    *{box-sizing:border-box}body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;margin:0 auto;\
    padding:0 1em 2em;line-height:1.45;color:#1d1d1d}h1{margin:.6em 0 .3em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}\
    .summary{border:2px solid #0072B2;border-radius:8px;background:#f3f8fc;padding:.7em 1em;margin:.8em 0}\
    .summary dl{display:grid;grid-template-columns:max-content 1fr;gap:.35em 1em;margin:0}.summary dt{font-weight:600}\
    .summary dd{margin:0}.summary ul{margin:.3em 0;padding-left:1.2em}\
    @media (max-width:640px){.summary dl{grid-template-columns:1fr;gap:0}.summary dd{margin-bottom:.5em}}\
    .scroll{overflow-x:auto;margin:.8em 0;max-width:100%}table{border-collapse:collapse;font-variant-numeric:tabular-nums}\
    td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}\
    td.text{text-align:left;white-space:normal;min-width:14em}.word{text-align:left}th.word{text-align:left}tbody tr:nth-child(even){background:#fafafa}\
    th{background:#eef1f4;cursor:pointer;user-select:none}th:hover{background:#dde4ea}\
    th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}\
    a.warn{color:#D55E00;text-decoration:none;font-weight:700;margin-left:.3em}\
    .figures{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}figure{margin:0;flex:0 1 auto;min-width:0}\
    figure svg{display:block;max-width:100%;height:auto;border:1px solid #e4e4e4}figcaption{font-size:.9em;color:#444;margin-top:.3em}\
    .file{color:#777}.note{font-size:.95em}code{font-size:.92em;background:#f2f2f2;padding:0 .2em;word-break:break-all}\
    li:target,a:target{background:#fff0b3}footer{margin-top:2em;color:#555;font-size:.9em}
    """

    /// Sorts a table by a heading's column on click (or Enter), numbers by `data-sort`, the rest as text; marks each
    /// table it made sortable with data-sortable="ready" (the browser check looks for it).
    static let sortScript = """
    (function(){function key(c){var v=c.getAttribute("data-sort");if(v!==null&&v!=="")return parseFloat(v);\
    var t=c.textContent.trim();var n=parseFloat(t);return isNaN(n)?t.toLowerCase():n;}\
    document.querySelectorAll("table.sortable").forEach(function(table){var heads=table.tHead.rows[0].cells;\
    Array.prototype.forEach.call(heads,function(th,col){th.tabIndex=0;th.title="sort by "+th.textContent;\
    function sort(){var asc=th.getAttribute("aria-sort")!=="ascending";\
    Array.prototype.forEach.call(heads,function(h){h.removeAttribute("aria-sort");});\
    th.setAttribute("aria-sort",asc?"ascending":"descending");var body=table.tBodies[0];\
    var rows=Array.prototype.slice.call(body.rows);rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);\
    var o=typeof x===typeof y?(x<y?-1:x>y?1:0):(typeof x==="number"?-1:1);return asc?o:-o;});\
    rows.forEach(function(r){body.appendChild(r);});}\
    th.addEventListener("click",sort);th.addEventListener("keydown",function(e){if(e.key==="Enter"||e.key===" "){e.preventDefault();sort();}});});\
    table.setAttribute("data-sortable","ready");});})();
    """
}
