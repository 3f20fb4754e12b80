import Foundation

/// Plain Swift references of the kernels: the obvious loops, Double accumulation. Every C kernel is tested
/// against these.
public enum Reference {
    public struct ConvGeometry {
        public var n, c, h, w, oc, kh, kw, stride, pad: Int
        public init(n: Int, c: Int, h: Int, w: Int, oc: Int, kh: Int, kw: Int, stride: Int, pad: Int) {
            self.n = n; self.c = c; self.h = h; self.w = w; self.oc = oc; self.kh = kh; self.kw = kw
            self.stride = stride; self.pad = pad
        }
        public var oh: Int { (h + 2 * pad - kh) / stride + 1 }
        public var ow: Int { (w + 2 * pad - kw) / stride + 1 }
    }

    /// out[n,o,y,x] = b[o] + Σ_{c,i,j} w[o,c,i,j] · in[n,c,y·s+i−p,x·s+j−p]
    public static func conv2d(_ x: [Float], _ wt: [Float], _ b: [Float]?, _ g: ConvGeometry) -> [Double] {
        var out = [Double](repeating: 0, count: g.n * g.oc * g.oh * g.ow)
        for n in 0..<g.n { for o in 0..<g.oc { for y in 0..<g.oh { for xx in 0..<g.ow {
            var acc = Double(b?[o] ?? 0)
            for c in 0..<g.c { for i in 0..<g.kh { for j in 0..<g.kw {
                let iy = y * g.stride + i - g.pad, ix = xx * g.stride + j - g.pad
                if iy >= 0 && iy < g.h && ix >= 0 && ix < g.w {
                    acc += Double(wt[((o * g.c + c) * g.kh + i) * g.kw + j]) * Double(x[((n * g.c + c) * g.h + iy) * g.w + ix])
                }
            } } }
            out[((n * g.oc + o) * g.oh + y) * g.ow + xx] = acc
        } } } }
        return out
    }

    /// Gradients of Σ dout · conv2d(x, w, b).
    public static func conv2dBackward(_ dout: [Float], _ x: [Float], _ wt: [Float], _ g: ConvGeometry)
        -> (dx: [Double], dw: [Double], db: [Double]) {
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: wt.count)
        var db = [Double](repeating: 0, count: g.oc)
        for n in 0..<g.n { for o in 0..<g.oc { for y in 0..<g.oh { for xx in 0..<g.ow {
            let d = Double(dout[((n * g.oc + o) * g.oh + y) * g.ow + xx])
            db[o] += d
            for c in 0..<g.c { for i in 0..<g.kh { for j in 0..<g.kw {
                let iy = y * g.stride + i - g.pad, ix = xx * g.stride + j - g.pad
                if iy >= 0 && iy < g.h && ix >= 0 && ix < g.w {
                    let xi = ((n * g.c + c) * g.h + iy) * g.w + ix, wi = ((o * g.c + c) * g.kh + i) * g.kw + j
                    dx[xi] += d * Double(wt[wi])
                    dw[wi] += d * Double(x[xi])
                }
            } } }
        } } } }
        return (dx, dw, db)
    }

    /// out[n,o] = b[o] + Σ_i x[n,i] w[o,i]
    public static func linear(_ x: [Float], _ w: [Float], _ b: [Float]?, n: Int, inF: Int, outF: Int) -> [Double] {
        var out = [Double](repeating: 0, count: n * outF)
        for r in 0..<n { for o in 0..<outF {
            var acc = Double(b?[o] ?? 0)
            for i in 0..<inF { acc += Double(x[r * inF + i]) * Double(w[o * inF + i]) }
            out[r * outF + o] = acc
        } }
        return out
    }

    /// Max pooling; also the flat (h*w) index of each maximum (first on ties).
    public static func maxPool(_ x: [Float], n: Int, c: Int, h: Int, w: Int, k: Int, s: Int) -> (out: [Double], arg: [Int]) {
        let oh = (h - k) / s + 1, ow = (w - k) / s + 1
        var out = [Double](), arg = [Int]()
        for p in 0..<(n * c) { for y in 0..<oh { for xx in 0..<ow {
            var best = -Double.infinity, bi = 0
            for i in 0..<k { for j in 0..<k {
                let idx = (y * s + i) * w + xx * s + j
                if Double(x[p * h * w + idx]) > best { best = Double(x[p * h * w + idx]); bi = idx }
            } }
            out.append(best); arg.append(bi)
        } } }
        return (out, arg)
    }

    public static func avgPool(_ x: [Float], n: Int, c: Int, h: Int, w: Int, k: Int, s: Int) -> [Double] {
        let oh = (h - k) / s + 1, ow = (w - k) / s + 1
        var out = [Double]()
        for p in 0..<(n * c) { for y in 0..<oh { for xx in 0..<ow {
            var acc = 0.0
            for i in 0..<k { for j in 0..<k { acc += Double(x[p * h * w + (y * s + i) * w + xx * s + j]) } }
            out.append(acc / Double(k * k))
        } } }
        return out
    }

    /// Per-sample cross-entropy with PyTorch's label smoothing, and its gradient w.r.t. the logits.
    public static func crossEntropy(_ z: [Float], labels: [Int], k: Int, smoothing: Double = 0) -> (loss: [Double], grad: [Double]) {
        let n = labels.count
        var loss = [Double](), grad = [Double](repeating: 0, count: z.count)
        for r in 0..<n {
            let row = (0..<k).map { Double(z[r * k + $0]) }
            let m = row.max()!
            let lse = m + log(row.map { exp($0 - m) }.reduce(0, +))
            var l = 0.0
            for j in 0..<k {
                let t = (j == labels[r] ? 1 - smoothing : 0) + smoothing / Double(k)
                l += t * (lse - row[j])
                grad[r * k + j] = exp(row[j] - lse) - t
            }
            loss.append(l)
        }
        return (loss, grad)
    }
}
