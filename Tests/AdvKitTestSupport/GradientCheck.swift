@_spi(Testing) import AdvKit
import XCTest

/// Checks a tape's gradients against central finite differences.
///
/// The checked function is L = Σ f(inputs) ⊙ R for a fixed random R, so every output element gets a
/// different upstream weight. Coordinates within eps of a kink (a ReLU input crossing 0, a bounded ReLU
/// reaching its bound, a max-pool window changing its maximum) are skipped: the tape's `kinkSignature()` at
/// x ± eps differs from that at x. At most `maxSkippedFraction` of the coordinates may be skipped.
public func checkGradients(_ inputs: [Tensor], eps: Float = 1e-2, atol: Double = 2e-3, rtol: Double = 2e-2,
                           maxCoordinates: Int = 400, maxSkippedFraction: Double = 0.2, minChecked: Int = 10, mode: Mode = .inference,
                           file: StaticString = #filePath, line: UInt = #line,
                           _ f: (Tape, [Variable]) -> Variable) {
    func loss(_ xs: [Tensor], upstream: Tensor?) -> (Double, Tensor, [Tensor], Int) {
        let tape = Tape(mode: mode)
        let vars = xs.map { tape.input($0) }
        let out = f(tape, vars)
        let r = upstream ?? randomTensor(out.shape, seed: 99, lo: 0.5, hi: 1.5)
        var total = 0.0
        out.value.withUnsafeBufferPointer { p in r.withUnsafeBufferPointer { q in for i in 0..<p.count { total += Double(p[i]) * Double(q[i]) } } }
        let grads = tape.gradients(of: out, seed: r, wrt: vars)
        return (total, r, grads, tape.kinkSignature())
    }
    let (l0, r, analytic, kinks) = loss(inputs, upstream: nil)
    var checked = 0, skipped = 0
    for (k, x) in inputs.enumerated() {
        let n = x.count
        let stride = max(1, n / maxCoordinates)
        for i in Swift.stride(from: 0, to: n, by: stride) {
            var plus = x, minus = x
            plus.withUnsafeMutableBufferPointer { $0[i] += eps }
            minus.withUnsafeMutableBufferPointer { $0[i] -= eps }
            var xsP = inputs, xsM = inputs
            xsP[k] = plus
            xsM[k] = minus
            let (lp, _, _, kp) = loss(xsP, upstream: r), (lm, _, _, km) = loss(xsM, upstream: r)
            if kp != kinks || km != kinks {
                skipped += 1
                continue
            }
            _ = l0
            let numeric = (lp - lm) / (2 * Double(eps))
            let got = Double(analytic[k].scalars[i])
            checked += 1
            if abs(got - numeric) > atol + rtol * abs(numeric) {
                XCTFail("input \(k) element \(i): tape gives \(got), finite differences \(numeric)", file: file, line: line)
                return
            }
        }
    }
    XCTAssertGreaterThanOrEqual(checked, min(minChecked, inputs.reduce(0) { $0 + $1.count }),
                                "only \(checked) coordinates were away from kinks", file: file, line: line)
    XCTAssertLessThanOrEqual(Double(skipped), maxSkippedFraction * Double(checked + skipped),
                             "\(skipped) of \(checked + skipped) coordinates sat on a kink", file: file, line: line)
}
