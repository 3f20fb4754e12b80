/// A line chart drawn into a PNG image: axes, a light grid, tick labels (a built-in 3×5 digit font), one
/// colour per series. Legends go in the report's text next to the picture.
enum Plot {
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public init(name: String, points: [(x: Double, y: Double)]) {
            self.name = name
            self.points = points
        }
    }

    /// Distinct colours, in series order (the report names them).
    public static let palette: [(name: String, rgb: (UInt8, UInt8, UInt8))] = [
        ("blue", (31, 119, 180)), ("orange", (255, 127, 14)), ("green", (44, 160, 44)), ("red", (214, 39, 40)),
        ("purple", (148, 103, 189)), ("brown", (140, 86, 75)), ("pink", (227, 119, 194)), ("gray", (127, 127, 127)),
        ("olive", (188, 189, 34)), ("cyan", (23, 190, 207)), ("black", (0, 0, 0)), ("navy", (0, 0, 128)),
    ]

    public static func colorName(_ i: Int) -> String { palette[i % palette.count].name }

    /// y in [0, 1] (accuracy) against x in [xMin, xMax].
    public static func lineChart(_ series: [Series], xMax: Double, width: Int = 480, height: Int = 320) -> PNG.Image {
        var img = PNG.Image(width: width, height: height)
        let left = 40, right = width - 12, top = 12, bottom = height - 28
        func px(_ x: Double) -> Int { left + Int((x / max(xMax, 1e-9)) * Double(right - left)) }
        func py(_ y: Double) -> Int { bottom - Int(min(max(y, 0), 1) * Double(bottom - top)) }
        // Grid and ticks: y every 0.2 (as percent), x at 5 steps.
        for k in 0...5 {
            let y = Double(k) / 5, yy = py(y)
            for x in left...right where x % 2 == 0 { img.set(x, yy, (220, 220, 220)) }
            drawNumber(Int((y * 100).rounded()), at: 4, yy - 2, into: &img)
            let xv = xMax * Double(k) / 5, xx = px(xv)
            for y in top...bottom where y % 2 == 0 { img.set(xx, y, (220, 220, 220)) }
            drawDecimal(xv, at: xx - 6, bottom + 6, into: &img)
        }
        for x in left...right { img.set(x, bottom, (0, 0, 0)) }
        for y in top...bottom { img.set(left, y, (0, 0, 0)) }
        for (i, s) in series.enumerated() {
            let c = palette[i % palette.count].rgb
            let pts = s.points.sorted { $0.x < $1.x }
            for j in 0..<pts.count {
                let (x0, y0) = (px(pts[j].x), py(pts[j].y))
                for dx in -2...2 { for dy in -2...2 { img.set(x0 + dx, y0 + dy, c) } }
                if j + 1 < pts.count { line(x0, y0, px(pts[j + 1].x), py(pts[j + 1].y), c, &img) }
            }
        }
        return img
    }

    static func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8), _ img: inout PNG.Image) {
        var (x, y) = (x0, y0)
        let dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1
        var err = dx + dy
        while true {
            img.set(x, y, c); img.set(x, y + 1, c)
            if x == x1 && y == y1 { break }
            let e2 = 2 * err
            if e2 >= dy { err += dy; x += sx }
            if e2 <= dx { err += dx; y += sy }
        }
    }

    // 3x5 glyphs for 0-9 and '.', rows top to bottom, 3 bits each (MSB left).
    static let glyphs: [Character: [UInt8]] = [
        "0": [7, 5, 5, 5, 7], "1": [2, 6, 2, 2, 7], "2": [7, 1, 7, 4, 7], "3": [7, 1, 7, 1, 7], "4": [5, 5, 7, 1, 1],
        "5": [7, 4, 7, 1, 7], "6": [7, 4, 7, 5, 7], "7": [7, 1, 1, 1, 1], "8": [7, 5, 7, 5, 7], "9": [7, 5, 7, 1, 7],
        ".": [0, 0, 0, 0, 2],
    ]

    static func drawText(_ s: String, at x: Int, _ y: Int, into img: inout PNG.Image) {
        var cx = x
        for ch in s {
            if let g = glyphs[ch] {
                for (r, bits) in g.enumerated() { for b in 0..<3 where bits & (4 >> b) != 0 { img.set(cx + b, y + r, (60, 60, 60)) } }
            }
            cx += 4
        }
    }

    static func drawNumber(_ v: Int, at x: Int, _ y: Int, into img: inout PNG.Image) { drawText(String(v), at: x, y, into: &img) }

    static func drawDecimal(_ v: Double, at x: Int, _ y: Int, into img: inout PNG.Image) {
        var s = String(format: "%.2f", v)
        while s.hasSuffix("0") && s.contains(".") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        drawText(s, at: x, y, into: &img)
    }
}

import Foundation
