import Foundation

/// Line charts of robust accuracy against ε as SVG: axis titles, x ticks on the measured ε, a y grid in percent, a
/// legend inside the figure naming every series, one colour, marker and dash per series from a colour-blind-safe
/// palette (Okabe & Ito 2008), each series' clean accuracy marked on the y axis, and a `<title>` tooltip with the
/// exact value on every point. Text stays text: selectable in a browser, editable in a vector editor.
public enum SVGPlot {
    public struct Series: Equatable, Sendable {
        public var name: String
        public var points: [Point]
        /// The accuracy on clean images, marked on the y axis (nil: not marked).
        public var clean: Double?
        /// Appended to the name in the legend and the tooltips (e.g. " †").
        public var mark: String

        public struct Point: Equatable, Sendable {
            public var x: Double
            public var y: Double
            public init(x: Double, y: Double) { (self.x, self.y) = (x, y) }
        }

        public init(name: String, points: [Point], clean: Double? = nil, mark: String = "") {
            (self.name, self.points, self.clean, self.mark) = (name, points, clean, mark)
        }
    }

    /// Okabe & Ito's colour-blind-safe palette without its yellow (too faint on white), black first.
    public static let colors = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7"]
    /// Solid, dashed, dotted, dash-dot: the second and later rounds of the colours differ by line as well.
    public static let dashes = ["", "7 4", "2 3", "9 3 2 3"]
    public static let markers = ["circle", "square", "triangle", "diamond", "triangle-down", "pentagon", "cross"]

    /// The style of series `i`: colour `i mod 7`, dash `i / 7`, a marker shifted each round so that no two of the
    /// first 28 series share colour, marker and dash; markers are filled in the first round, open after.
    public static func style(_ i: Int) -> (color: String, dash: String, marker: String, filled: Bool) {
        let round = i / colors.count
        return (colors[i % colors.count], dashes[round % dashes.count], markers[(i + round) % markers.count], round == 0)
    }

    /// One panel: robust accuracy (y, a share in [0, 1], drawn in %) against ε (x), ticks on `xTicks`.
    public static func chart(title: String, series: [Series], xTicks: [Double], xTitle: String = "ε (L∞)",
                             yTitle: String = "robust accuracy (%)", width: Double = 500) -> String {
        let ticks = Array(Set(xTicks)).sorted()
        let xMax = max(ticks.last ?? 1, 1e-9), xMin = min(ticks.first ?? 0, 0)
        let left = 64.0, right = width - 18, top = 40.0, plotHeight = 250.0, bottom = top + plotHeight
        func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * (right - left) }
        func py(_ y: Double) -> Double { bottom - min(max(y, 0), 1) * plotHeight }
        // x tick labels turn when neighbours would touch (at 12 px a digit is about 6.7 px wide, a point 3.3).
        let labels = ticks.map(SVG.number)
        let gaps = zip(ticks.dropFirst(), ticks).map { px($0) - px($1) }
        let widest = labels.map { l in l.reduce(0.0) { $0 + ($1 == "." ? 3.3 : 6.7) } }.max() ?? 7
        let turned = (gaps.min() ?? .infinity) < widest + 4
        let tickBand = turned ? widest * 0.72 + 14 : 18.0
        let xTitleY = bottom + tickBand + 22
        let legendTop = xTitleY + 14, rowHeight = 19.0
        // One column of legend entries (a name and its clean accuracy fit in the width); two on a wide figure.
        let columns = width >= 720 ? 2 : 1, columnWidth = (right - left + 40) / Double(columns)
        let rows = (series.count + columns - 1) / columns
        let height = legendTop + Double(rows) * rowHeight + 8

        var s = "<svg class=\"advkit-curves\" viewBox=\"0 0 \(SVG.number(width)) \(SVG.number(height))\""
        s += " width=\"\(SVG.number(width))\" height=\"\(SVG.number(height))\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<title>\(SVG.escape(title))</title>\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n"
        s += "<text x=\"\(SVG.number(left))\" y=\"20\" font-size=\"14\" font-weight=\"bold\">\(SVG.escape(title))</text>\n"
        // Grid and y ticks every 20%.
        for k in 0...5 {
            let y = py(Double(k) / 5)
            s += "<line x1=\"\(SVG.number(left))\" x2=\"\(SVG.number(right))\" y1=\"\(SVG.number(y))\" y2=\"\(SVG.number(y))\" stroke=\"#e3e3e3\"/>"
            s += "<text class=\"ytick\" x=\"\(SVG.number(left - 12))\" y=\"\(SVG.number(y + 4))\" text-anchor=\"end\">\(k * 20)</text>\n"
        }
        // x ticks on the measured ε.
        for (t, label) in zip(ticks, labels) {
            let x = px(t)
            s += "<line x1=\"\(SVG.number(x))\" x2=\"\(SVG.number(x))\" y1=\"\(SVG.number(top))\" y2=\"\(SVG.number(bottom))\" stroke=\"#f0f0f0\"/>"
            s += "<line x1=\"\(SVG.number(x))\" x2=\"\(SVG.number(x))\" y1=\"\(SVG.number(bottom))\" y2=\"\(SVG.number(bottom + 5))\" stroke=\"#333\"/>"
            if turned {
                s += "<text class=\"xtick\" x=\"\(SVG.number(x + 4))\" y=\"\(SVG.number(bottom + 12))\" text-anchor=\"end\""
                s += " transform=\"rotate(-45 \(SVG.number(x + 4)) \(SVG.number(bottom + 12)))\">\(label)</text>\n"
            } else {
                s += "<text class=\"xtick\" x=\"\(SVG.number(x))\" y=\"\(SVG.number(bottom + 18))\" text-anchor=\"middle\">\(label)</text>\n"
            }
        }
        s += "<path d=\"M\(SVG.number(left)) \(SVG.number(top))V\(SVG.number(bottom))H\(SVG.number(right))\" fill=\"none\" stroke=\"#333\"/>\n"
        s += "<text class=\"axis-title\" x=\"\((left + right) / 2)\" y=\"\(SVG.number(xTitleY))\" text-anchor=\"middle\">\(SVG.escape(xTitle))</text>\n"
        let yMid = (top + bottom) / 2
        s += "<text class=\"axis-title\" x=\"16\" y=\"\(SVG.number(yMid))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(SVG.number(yMid)))\">"
        s += "\(SVG.escape(yTitle))</text>\n"
        // Series: line, then the points with their tooltips, then the clean accuracy as a tick left of the y axis.
        for (i, ser) in series.enumerated() {
            let st = style(i), name = SVG.escape(ser.name + ser.mark)
            let pts = ser.points.sorted { $0.x < $1.x }
            s += "<g class=\"series\" data-name=\"\(name)\">"
            if pts.count > 1 {
                let d = pts.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(SVG.number(px($0.element.x))) \(SVG.number(py($0.element.y)))" }.joined()
                s += "<path d=\"\(d)\" fill=\"none\" stroke=\"\(st.color)\" stroke-width=\"1.8\""
                s += st.dash.isEmpty ? "" : " stroke-dasharray=\"\(st.dash)\""
                s += "/>"
            }
            for p in pts {
                s += "<g class=\"point\">" + marker(st.marker, x: px(p.x), y: py(p.y), color: st.color, filled: st.filled)
                s += "<title>\(name): \(SVG.percent(p.y)) at ε = \(SVG.number(p.x))</title></g>"
            }
            if let c = ser.clean {
                s += "<g class=\"clean\"><path d=\"M\(SVG.number(left - 9)) \(SVG.number(py(c)))h7\" stroke=\"\(st.color)\" stroke-width=\"3\"/>"
                s += "<title>\(name): clean accuracy \(SVG.percent(c))</title></g>"
            }
            s += "</g>\n"
        }
        // The legend, under the plot: a line sample with the marker, the name and the clean accuracy.
        s += "<g class=\"legend\">"
        for (i, ser) in series.enumerated() {
            let st = style(i)
            let x = left - 40 + Double(i / rows) * columnWidth, y = legendTop + Double(i % rows) * rowHeight + 9
            s += "<g class=\"legend-entry\"><path d=\"M\(SVG.number(x)) \(SVG.number(y))h26\" stroke=\"\(st.color)\" stroke-width=\"1.8\""
            s += st.dash.isEmpty ? "" : " stroke-dasharray=\"\(st.dash)\""
            s += "/>" + marker(st.marker, x: x + 13, y: y, color: st.color, filled: st.filled)
            var label = SVG.escape(ser.name + ser.mark)
            if let c = ser.clean { label += " <tspan fill=\"#555\">(clean \(String(format: "%.1f%%", c * 100)))</tspan>" }
            s += "<text x=\"\(SVG.number(x + 32))\" y=\"\(SVG.number(y + 4.5))\" font-size=\"13\">\(label)</text></g>"
        }
        s += "</g>\n</svg>\n"
        return s
    }

    /// A marker centred on (x, y), about 9 px across.
    static func marker(_ kind: String, x: Double, y: Double, color: String, filled: Bool) -> String {
        let r = 4.5
        func poly(_ pts: [(Double, Double)]) -> String {
            "M" + pts.map { "\(SVG.number(x + $0.0)) \(SVG.number(y + $0.1))" }.joined(separator: "L") + "Z"
        }
        let d: String
        switch kind {
        case "square": d = poly([(-r * 0.85, -r * 0.85), (r * 0.85, -r * 0.85), (r * 0.85, r * 0.85), (-r * 0.85, r * 0.85)])
        case "triangle": d = poly([(0, -r * 1.1), (r, r * 0.75), (-r, r * 0.75)])
        case "triangle-down": d = poly([(0, r * 1.1), (r, -r * 0.75), (-r, -r * 0.75)])
        case "diamond": d = poly([(0, -r * 1.2), (r, 0), (0, r * 1.2), (-r, 0)])
        case "pentagon": d = poly((0..<5).map { k in let a = Double(k) * 2 * .pi / 5 - .pi / 2; return (r * 1.1 * cos(a), r * 1.1 * sin(a)) })
        case "cross":
            let a = r * 0.8
            return "<path d=\"M\(SVG.number(x - a)) \(SVG.number(y - a))L\(SVG.number(x + a)) \(SVG.number(y + a))M\(SVG.number(x - a)) \(SVG.number(y + a))"
                + "L\(SVG.number(x + a)) \(SVG.number(y - a))\" stroke=\"\(color)\" stroke-width=\"2.2\" fill=\"none\"/>"
        default:
            return "<circle cx=\"\(SVG.number(x))\" cy=\"\(SVG.number(y))\" r=\"\(SVG.number(r))\" fill=\"\(filled ? color : "#fff")\""
                + " stroke=\"\(filled ? "#fff" : color)\" stroke-width=\"\(filled ? 0.8 : 1.6)\"/>"
        }
        return "<path d=\"\(d)\" fill=\"\(filled ? color : "#fff")\" stroke=\"\(filled ? "#fff" : color)\" stroke-width=\"\(filled ? 0.8 : 1.6)\"/>"
    }
}

/// Text and numbers for SVG and HTML.
enum SVG {
    /// A standalone .svg file of a figure drawn for inlining in HTML (which needs no namespace).
    static func file(_ svg: String) -> String {
        guard let r = svg.range(of: "<svg ") else { return svg }
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + svg.replacingCharacters(in: r, with: "<svg xmlns=\"http://www.w3.org/2000/svg\" ")
    }

    /// Escapes the five characters XML gives a meaning (text and attribute values alike).
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for ch in s {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(ch)
            }
        }
        return out
    }

    /// A coordinate or ε: at most 4 decimals, no trailing zeros ("0.025", "12.5", "0").
    static func number(_ v: Double) -> String {
        var s = String(format: "%.4f", v)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s == "-0" ? "0" : s
    }

    static func number(_ v: Float) -> String { number(Double(v)) }

    /// A share in [0, 1] as a percentage with up to `digits` decimals, trailing zeros dropped: 0.875 → "87.5%".
    static func percent(_ share: Double, digits: Int = 2) -> String {
        var s = String(format: "%.\(digits)f", share * 100)
        if s.contains(".") {
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
        }
        return s + "%"
    }
}
