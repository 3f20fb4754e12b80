import Foundation

/// Plain Swift references of the general convolution and pooling kernels (conv_general.c, pool_general.c):
/// the definitions written as loops over every output and every tap, Double accumulation.
extension Reference {
    /// ONNX Conv geometry with its shapes: input (n,c,h,w), weight (oc, c/groups, kh, kw).
    public struct GeneralConvGeometry: CustomStringConvertible {
        public var n, c, h, w, oc, kh, kw, groups: Int
        public var strideH, strideW, padT, padL, padB, padR, dilH, dilW: Int

        public init(n: Int, c: Int, h: Int, w: Int, oc: Int, kh: Int, kw: Int, groups: Int = 1,
                    strides: (Int, Int) = (1, 1), pads: (Int, Int, Int, Int) = (0, 0, 0, 0), dilations: (Int, Int) = (1, 1)) {
            self.n = n; self.c = c; self.h = h; self.w = w; self.oc = oc; self.kh = kh; self.kw = kw; self.groups = groups
            (strideH, strideW) = strides
            (padT, padL, padB, padR) = pads
            (dilH, dilW) = dilations
        }

        public var oh: Int { (h + padT + padB - dilH * (kh - 1) - 1) / strideH + 1 }
        public var ow: Int { (w + padL + padR - dilW * (kw - 1) - 1) / strideW + 1 }
        public var cg: Int { c / groups }
        public var inputCount: Int { n * c * h * w }
        public var weightCount: Int { oc * cg * kh * kw }
        public var outputCount: Int { n * oc * oh * ow }

        public var description: String {
            "n \(n) c \(c) \(h)x\(w) oc \(oc) k \(kh)x\(kw) groups \(groups) strides \(strideH),\(strideW) "
                + "pads \(padT),\(padL),\(padB),\(padR) dil \(dilH),\(dilW)"
        }

        /// Calls body(flat weight index, flat input index) for each tap of output (n, o, y, x) inside the input.
        func forEachTap(n: Int, o: Int, y: Int, x: Int, _ body: (Int, Int) -> Void) {
            let g = o / (oc / groups)
            for c in 0..<cg { for i in 0..<kh { for j in 0..<kw {
                let iy = y * strideH + i * dilH - padT, ix = x * strideW + j * dilW - padL
                if iy >= 0 && iy < h && ix >= 0 && ix < w {
                    body(((o * cg + c) * kh + i) * kw + j, ((n * self.c + g * cg + c) * h + iy) * w + ix)
                }
            } } }
        }
    }

    /// out[n,o,y,x] = b[o] + Σ_{c,i,j} w[o,c,i,j] · in[n, g·C/G + c, y·s_h + i·d_h − top, x·s_w + j·d_w − left],
    /// g = o / (OC/G).
    public static func conv2dGeneral(_ x: [Float], _ wt: [Float], _ b: [Float]?, _ g: GeneralConvGeometry) -> [Double] {
        var out = [Double](repeating: 0, count: g.outputCount)
        for n in 0..<g.n { for o in 0..<g.oc { for y in 0..<g.oh { for xx in 0..<g.ow {
            var acc = Double(b?[o] ?? 0)
            g.forEachTap(n: n, o: o, y: y, x: xx) { wi, xi in acc += Double(wt[wi]) * Double(x[xi]) }
            out[((n * g.oc + o) * g.oh + y) * g.ow + xx] = acc
        } } } }
        return out
    }

    /// Gradients of Σ dout · conv2dGeneral(x, w, b).
    public static func conv2dGeneralBackward(_ dout: [Float], _ x: [Float], _ wt: [Float], _ g: GeneralConvGeometry)
        -> (dx: [Double], dw: [Double], db: [Double]) {
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: wt.count)
        var db = [Double](repeating: 0, count: g.oc)
        for n in 0..<g.n { for o in 0..<g.oc { for y in 0..<g.oh { for xx in 0..<g.ow {
            let d = Double(dout[((n * g.oc + o) * g.oh + y) * g.ow + xx])
            db[o] += d
            g.forEachTap(n: n, o: o, y: y, x: xx) { wi, xi in
                dx[xi] += d * Double(wt[wi])
                dw[wi] += d * Double(x[xi])
            }
        } } } }
        return (dx, dw, db)
    }

    /// ONNX MaxPool / AveragePool geometry with its input shape (n,c,h,w).
    public struct GeneralPoolGeometry: CustomStringConvertible {
        public var n, c, h, w, kh, kw: Int
        public var strideH, strideW, padT, padL, padB, padR, dilH, dilW: Int
        public var ceil: Bool

        public init(n: Int, c: Int, h: Int, w: Int, kernel: (Int, Int), strides: (Int, Int),
                    pads: (Int, Int, Int, Int) = (0, 0, 0, 0), dilations: (Int, Int) = (1, 1), ceil: Bool = false) {
            self.n = n; self.c = c; self.h = h; self.w = w
            (kh, kw) = kernel
            (strideH, strideW) = strides
            (padT, padL, padB, padR) = pads
            (dilH, dilW) = dilations
            self.ceil = ceil
        }

        /// PyTorch's pooling_output_shape: floor or ceil of (size + pads − dilated kernel) / stride, plus one; in ceil
        /// mode a last window that would start past the input and its leading padding is dropped.
        static func length(_ size: Int, _ k: Int, _ s: Int, _ p0: Int, _ p1: Int, _ d: Int, _ ceil: Bool) -> Int {
            let q = Double(size + p0 + p1 - d * (k - 1) - 1) / Double(s)
            var out = Int(ceil ? q.rounded(.up) : q.rounded(.down)) + 1
            if ceil && (out - 1) * s >= size + p0 { out -= 1 }
            return out
        }

        public var oh: Int { Self.length(h, kh, strideH, padT, padB, dilH, ceil) }
        public var ow: Int { Self.length(w, kw, strideW, padL, padR, dilW, ceil) }
        public var inputCount: Int { n * c * h * w }
        public var outputCount: Int { n * c * oh * ow }

        public var description: String {
            "n \(n) c \(c) \(h)x\(w) k \(kh)x\(kw) strides \(strideH),\(strideW) pads \(padT),\(padL),\(padB),\(padR) "
                + "dil \(dilH),\(dilW) ceil \(ceil)"
        }

        /// The taps of output (y, x) as (row, column) in input + padding coordinates (may lie outside the input).
        func taps(y: Int, x: Int) -> [(Int, Int)] {
            var out: [(Int, Int)] = []
            for i in 0..<kh { for j in 0..<kw { out.append((y * strideH - padT + i * dilH, x * strideW - padL + j * dilW)) } }
            return out
        }

        func inside(_ t: (Int, Int)) -> Bool { t.0 >= 0 && t.0 < h && t.1 >= 0 && t.1 < w }

        /// The average's divisor: taps inside the input, or with count_include_pad those inside input + padding.
        func count(y: Int, x: Int, includePad: Bool) -> Int {
            taps(y: y, x: x).filter {
                includePad ? ($0.0 >= -padT && $0.0 < h + padB && $0.1 >= -padL && $0.1 < w + padR) : inside($0)
            }.count
        }
    }

    /// Max over each window's taps inside the input; the flat (h*w) index of the first maximum in row-major order
    /// (-1 and -inf for a window with no tap inside).
    public static func maxPoolGeneral(_ x: [Float], _ g: GeneralPoolGeometry) -> (out: [Double], arg: [Int]) {
        var out: [Double] = [], arg: [Int] = []
        for p in 0..<(g.n * g.c) { for y in 0..<g.oh { for xx in 0..<g.ow {
            var best = -Double.infinity, bi = -1
            for t in g.taps(y: y, x: xx) where g.inside(t) {
                let idx = t.0 * g.w + t.1, v = Double(x[p * g.h * g.w + idx])
                if bi < 0 || v > best { best = v; bi = idx }
            }
            out.append(best); arg.append(bi)
        } } }
        return (out, arg)
    }

    /// Gradient of Σ dout · maxPoolGeneral(x): each dout goes to its window's maximum.
    public static func maxPoolGeneralBackward(_ dout: [Float], _ x: [Float], _ g: GeneralPoolGeometry) -> [Double] {
        let arg = maxPoolGeneral(x, g).arg
        var dx = [Double](repeating: 0, count: g.inputCount)
        let per = g.oh * g.ow
        for p in 0..<(g.n * g.c) { for q in 0..<per where arg[p * per + q] >= 0 {
            dx[p * g.h * g.w + arg[p * per + q]] += Double(dout[p * per + q])
        } }
        return dx
    }

    /// (Σ of each window's taps inside the input) / count (0 when count is 0).
    public static func avgPoolGeneral(_ x: [Float], _ g: GeneralPoolGeometry, countIncludePad: Bool) -> [Double] {
        var out: [Double] = []
        for p in 0..<(g.n * g.c) { for y in 0..<g.oh { for xx in 0..<g.ow {
            var acc = 0.0
            for t in g.taps(y: y, x: xx) where g.inside(t) { acc += Double(x[p * g.h * g.w + t.0 * g.w + t.1]) }
            let count = g.count(y: y, x: xx, includePad: countIncludePad)
            out.append(count == 0 ? 0 : acc / Double(count))
        } } }
        return out
    }

    /// Gradient of Σ dout · avgPoolGeneral(x).
    public static func avgPoolGeneralBackward(_ dout: [Float], _ g: GeneralPoolGeometry, countIncludePad: Bool) -> [Double] {
        var dx = [Double](repeating: 0, count: g.inputCount)
        for p in 0..<(g.n * g.c) { for y in 0..<g.oh { for xx in 0..<g.ow {
            let count = g.count(y: y, x: xx, includePad: countIncludePad)
            if count == 0 { continue }
            let d = Double(dout[(p * g.oh + y) * g.ow + xx]) / Double(count)
            for t in g.taps(y: y, x: xx) where g.inside(t) { dx[p * g.h * g.w + t.0 * g.w + t.1] += d }
        } } }
        return dx
    }
}
