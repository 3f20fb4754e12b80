import Foundation

/// The report's picture figures as SVG: the pixels as embedded PNGs (`<image>` with a data URI, drawn pixelated),
/// the classes and confidences as text beside each image.
enum SVGFigures {
    /// How many screen pixels a small image's pixel takes: the largest whole number that keeps its longer side
    /// within 96 px (28×28 → 3, 84 px); 1 for an image of 96 px or more.
    static func scale(_ img: ReportPictures.Image) -> Int { max(1, 96 / max(img.width, img.height, 1)) }

    /// The displayed size of an image: whole-pixel blown up (`scale`), or its longer side 96 px when it is larger.
    static func displaySize(_ img: ReportPictures.Image) -> (w: Double, h: Double) {
        let longer = max(img.width, img.height, 1)
        if longer >= 96 { return (96 * Double(img.width) / Double(longer), 96 * Double(img.height) / Double(longer)) }
        return (Double(img.width * scale(img)), Double(img.height * scale(img)))
    }

    /// The image's PNG blown up by whole pixels to its displayed size (`scale`): renderers that smooth a scaled
    /// image whatever `image-rendering` says (librsvg, so rsvg-convert and what converts through it) still show
    /// square pixels.
    static func blownUp(_ img: ReportPictures.Image) -> Data {
        let k = scale(img)
        guard k > 1, let decoded = try? PNG.decode(img.png) else { return img.png }
        var big = PNG.Image(width: img.width * k, height: img.height * k, channels: decoded.channels)
        big.paste(decoded, at: 0, 0, scale: k)
        return PNG.encode(big)
    }

    static func image(_ img: ReportPictures.Image, x: Double, y: Double, label: String) -> String {
        let (w, h) = displaySize(img)
        return "<image x=\"\(SVG.number(x))\" y=\"\(SVG.number(y))\" width=\"\(SVG.number(w))\" height=\"\(SVG.number(h))\""
            + " preserveAspectRatio=\"none\" style=\"image-rendering:pixelated\" href=\"data:image/png;base64,\(blownUp(img).base64EncodedString())\">"
            + "<title>\(SVG.escape(label))</title></image>"
    }

    /// A class name for a picture: the dataset's name, cut to 22 characters; "class k" when there is none.
    static func className(_ k: Int, _ names: [String]) -> String {
        let name = k >= 0 && k < names.count ? names[k] : "class \(k)"
        return name.count > 22 ? String(name.prefix(21)) + "…" : name
    }

    static func text(_ s: String, x: Double, y: Double, anchor: String = "middle", attributes: String = "") -> String {
        "<text x=\"\(SVG.number(x))\" y=\"\(SVG.number(y))\" text-anchor=\"\(anchor)\"\(attributes.isEmpty ? "" : " " + attributes)>\(SVG.escape(s))</text>"
    }

    /// What the attack added, for the figure's title: ε·sign(∇) for FGSM, the projected steps' sum for PGD.
    static func perturbationName(_ attack: String, epsilon: Float?) -> String {
        switch (attack, epsilon) {
        case let ("fgsm", e?): return "δ = ε·sign(∇ₓL), ε = \(SVG.number(e))"
        case let (_, e?): return "δ with ‖δ‖∞ ≤ ε = \(SVG.number(e))"
        default: return "δ, the smallest the attack found"
        }
    }

    /// The paper's figure, one row per image: x (true class; predicted class, confidence) + δ (shown ×k) =
    /// x′ (predicted class, confidence), with the row's outcome.
    static func gallery(_ g: ReportPictures.Gallery, classNames: [String], title: String) -> String {
        let column = 150.0, pad = 14.0, sign = 26.0
        let width = pad * 2 + column * 3 + sign * 2
        let imageHeight = g.rows.map { displaySize($0.clean).h }.max() ?? 96
        let rowHeight = imageHeight + 58, top = 62.0
        let height = top + Double(g.rows.count) * rowHeight + 4
        let xs = [pad, pad + column + sign, pad + 2 * (column + sign)]
        var s = "<svg class=\"advkit-gallery\" viewBox=\"0 0 \(SVG.number(width)) \(SVG.number(height))\" width=\"\(SVG.number(width))\""
        s += " height=\"\(SVG.number(height))\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">\n<title>\(SVG.escape(title))</title>\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n"
        s += text(title, x: pad, y: 18, anchor: "start", attributes: "font-size=\"14\" font-weight=\"bold\"") + "\n"
        s += text(perturbationName(g.attack, epsilon: g.epsilon), x: pad, y: 34, anchor: "start", attributes: "fill=\"#555\"") + "\n"
        for (x, head) in zip(xs, ["x (clean)", "δ (amplified ×k)", "x′ = x + δ"]) {
            s += text(head, x: x + column / 2, y: 54, attributes: "font-weight=\"bold\"")
        }
        s += "\n"
        for (i, row) in g.rows.enumerated() {
            let y = top + Double(i) * rowHeight
            let (w, _) = displaySize(row.clean)
            let ix = xs.map { $0 + (column - w) / 2 }
            let truth = className(row.label, classNames), before = className(row.cleanPrediction, classNames)
            let after = className(row.adversarialPrediction, classNames)
            let cleanConf = String(format: "%.1f%%", row.cleanConfidence * 100), advConf = String(format: "%.1f%%", row.adversarialConfidence * 100)
            s += "<g class=\"gallery-row\" data-outcome=\"\(SVG.escape(row.outcome))\">"
            s += image(row.clean, x: ix[0], y: y, label: "test image \(row.index): \(truth), predicted \(before) \(cleanConf)")
            s += image(row.perturbation, x: ix[1], y: y,
                       label: "δ ×\(SVG.number((row.amplification * 10).rounded() / 10)) (‖δ‖∞ = \(SVG.number(row.linf)); mid-gray is 0)")
            s += image(row.adversarial, x: ix[2], y: y, label: "adversarial: predicted \(after) \(advConf)")
            let mid = y + imageHeight / 2 + 8
            s += text("+", x: xs[1] - sign / 2, y: mid, attributes: "font-size=\"22\"") + text("=", x: xs[2] - sign / 2, y: mid, attributes: "font-size=\"22\"")
            let line1 = y + imageHeight + 16, line2 = line1 + 15
            let wrongBefore = row.cleanPrediction != row.label
            s += text("\(before) \(cleanConf)", x: xs[0] + column / 2, y: line1, attributes: "class=\"prediction\"" + (wrongBefore ? " fill=\"#D55E00\"" : ""))
            s += text("true: \(truth) · #\(row.index)", x: xs[0] + column / 2, y: line2, attributes: "class=\"truth\" fill=\"#555\"")
            s += text("×\(SVG.number((row.amplification * 10).rounded() / 10))", x: xs[1] + column / 2, y: line1, attributes: "class=\"amplification\"")
            s += text("‖δ‖∞ \(String(format: "%.3f", row.linf))", x: xs[1] + column / 2, y: line2, attributes: "fill=\"#555\"")
            let fooled = row.adversarialPrediction != row.label
            s += text("\(after) \(advConf)", x: xs[2] + column / 2, y: line1,
                      attributes: "class=\"prediction\"" + (fooled ? " fill=\"#D55E00\" font-weight=\"bold\"" : ""))
            s += text(row.outcome, x: xs[2] + column / 2, y: line2, attributes: "class=\"outcome\" fill=\"#555\"")
            s += "</g>\n"
        }
        s += "</svg>\n"
        return s
    }

    /// Saliency maps: each image with its true and predicted class, and |∂logit(true class)/∂x| scaled to its
    /// maximum (white: the largest).
    static func saliency(_ rows: [ReportPictures.SaliencyRow], classNames: [String], title: String) -> String {
        let column = 150.0, pad = 14.0
        let width = pad * 2 + column * 2
        let imageHeight = rows.map { displaySize($0.image).h }.max() ?? 96
        let rowHeight = imageHeight + 44, top = 46.0
        let height = top + Double(rows.count) * rowHeight + 4
        var s = "<svg class=\"advkit-saliency\" viewBox=\"0 0 \(SVG.number(width)) \(SVG.number(height))\" width=\"\(SVG.number(width))\""
        s += " height=\"\(SVG.number(height))\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">\n<title>\(SVG.escape(title))</title>\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n"
        s += text(title, x: pad, y: 18, anchor: "start", attributes: "font-size=\"14\" font-weight=\"bold\"") + "\n"
        for (x, head) in zip([pad, pad + column], ["x", "|∂logit(true class)/∂x|"]) {
            s += text(head, x: x + column / 2, y: 38, attributes: "font-weight=\"bold\"")
        }
        s += "\n"
        for (i, row) in rows.enumerated() {
            let y = top + Double(i) * rowHeight
            let (w, _) = displaySize(row.image)
            let truth = className(row.label, classNames), pred = className(row.prediction, classNames)
            let conf = String(format: "%.1f%%", row.confidence * 100)
            s += "<g class=\"saliency-row\">"
            s += image(row.image, x: pad + (column - w) / 2, y: y, label: "test image \(row.index): \(truth), predicted \(pred) \(conf)")
            s += image(row.map, x: pad + column + (column - w) / 2, y: y, label: "saliency of test image \(row.index) for \(truth)")
            let line1 = y + imageHeight + 16, line2 = line1 + 15
            s += text("\(pred) \(conf)", x: pad + column / 2, y: line1, attributes: "class=\"prediction\"" + (row.prediction != row.label ? " fill=\"#D55E00\"" : ""))
            s += text("true: \(truth) · #\(row.index)", x: pad + column / 2, y: line2, attributes: "class=\"truth\" fill=\"#555\"")
            s += "</g>\n"
        }
        s += "</svg>\n"
        return s
    }

    /// The gallery's pixels alone as one raster (rows of x, δ, x′ at 3×), for slides and tools that want a PNG.
    static func galleryRaster(_ g: ReportPictures.Gallery) throws -> PNG.Image? {
        try raster(g.rows.map { [$0.clean, $0.perturbation, $0.adversarial] })
    }

    static func saliencyRaster(_ rows: [ReportPictures.SaliencyRow]) throws -> PNG.Image? {
        try raster(rows.map { [$0.image, $0.map] })
    }

    static func raster(_ grid: [[ReportPictures.Image]]) throws -> PNG.Image? {
        guard let first = grid.first?.first else { return nil }
        let (w, h, scale, pad) = (first.width, first.height, 3, 6)
        let columns = grid.map(\.count).max() ?? 0
        var img = PNG.Image(width: columns * (w * scale + pad) + pad, height: grid.count * (h * scale + pad) + pad)
        for (r, row) in grid.enumerated() {
            for (c, cell) in row.enumerated() {
                img.paste(try PNG.decode(cell.png), at: pad + c * (w * scale + pad), pad + r * (h * scale + pad), scale: scale)
            }
        }
        return img
    }
}
