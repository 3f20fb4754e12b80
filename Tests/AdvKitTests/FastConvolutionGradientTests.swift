@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// The convolution routes of issue #18 on the tape, against central finite differences: depthwise2d.c
/// (depthwise, channels innermost), conv_batched.c (small planes, several images per GEMM) and winograd.c (3x3,
/// stride 1, padding 1). With the input alone as the target the tape asks for d(input) only, the attack's path
/// these routes serve; with the weights too, their forward pass feeds the weight gradients that stay in
/// conv2d.c / conv_general.c. The first test runs with winograd6.c's 6x6 tiles off, the second checks them
/// against that. (The routes are on unless ADVKIT_CONV_ROUTE=old; Winograd and the batched route
/// need AVX-512's kernel, without which these shapes run the old routes and the checks still hold.)
final class FastConvolutionGradientTests: XCTestCase {
    func testGradientsThroughTheNewRoutes() {
        WinogradFilterCacheControl.sixBySixTiles = false
        defer { WinogradFilterCacheControl.resetSixBySixTiles() }
        let cases: [(String, Shape, Shape, Conv2DGeometry)] = [
            ("depthwise 3x3, stride 2, pads (1,0,2,1)", [2, 17, 5, 6], [17, 1, 3, 3],
             Conv2DGeometry(strides: (2, 2), pads: (1, 0, 2, 1), groups: 17)),
            ("depthwise 3x3 on 2x2 planes", [3, 5, 2, 2], [5, 1, 3, 3], Conv2DGeometry(pads: (1, 1, 1, 1), groups: 5)),
            ("pointwise on 2x2 planes (batched)", [5, 6, 2, 2], [7, 6, 1, 1], Conv2DGeometry()),
            ("3x3 stride 2 on 5x5 (batched)", [3, 4, 5, 5], [5, 4, 3, 3], Conv2DGeometry(strides: (2, 2), pads: (1, 1, 1, 1))),
            ("3x3 stride 1 pad 1, 16 channels (Winograd)", [2, 16, 5, 4], [16, 16, 3, 3], Conv2DGeometry(pads: (1, 1, 1, 1))),
        ]
        for (i, (name, xs, ws, g)) in cases.enumerated() {
            let x = randomTensor(xs, seed: UInt64(10 * i + 1)), w = randomTensor(ws, seed: UInt64(10 * i + 2))
            let b = randomTensor([ws[0]], seed: UInt64(10 * i + 3))
            // d(input) alone, through a fused bounded ReLU (MobileNet's Clip) and a ReLU
            for act in [FusedActivation.relu, .boundedReLU(0.5)] {
                // eps 1e-3: an input moves up to OC*9 outputs, and at 1e-2 a third of the coordinates moved one
                // across a kink; atol 5e-3 for the float32 outputs' rounding divided by 2 eps
                checkGradients([x], eps: 1e-3, atol: 5e-3) { t, v in
                    t.conv2d(v[0], weight: t.input(w), bias: t.input(b), geometry: g, activation: act)
                }
            }
            checkGradients([x, w, b]) { t, v in t.conv2d(v[0], weight: v[1], bias: v[2], geometry: g) }
            _ = name
        }
    }

    /// winograd6.c's F(4x4, 3x3) and F(2x2, 5x5) on the tape. Their rounding (up to ~5e-5 of the outputs' RMS for
    /// F(4x4, 3x3), Winograd6Tests) moves a loss by more than central differences at eps 1e-3 can take (two
    /// coordinates off by 6% in a first try), so the checks run in two steps: finite differences with the 6x6
    /// route off (the input gradient then runs winograd.c's F(2x2, 3x3), or the GEMM route for 5x5), and the
    /// route's values and input gradients against those, within its rounding.
    func testSixBySixWinogradOnTheTape() {
        defer { WinogradFilterCacheControl.resetSixBySixTiles() }
        let cases: [(Shape, Shape, Conv2DGeometry)] = [
            ([2, 16, 8, 7], [16, 16, 3, 3], Conv2DGeometry(pads: (1, 1, 1, 1))),  // F(4x4, 3x3), both directions
            ([2, 16, 12, 12], [24, 16, 5, 5], Conv2DGeometry()),                   // F(2x2, 5x5), forward only
            ([2, 16, 9, 9], [16, 16, 5, 5], Conv2DGeometry(pads: (2, 2, 2, 2))),  // F(2x2, 5x5), both directions
        ]
        for (i, (xs, ws, g)) in cases.enumerated() {
            let x = randomTensor(xs, seed: UInt64(10 * i + 1)), w = randomTensor(ws, seed: UInt64(10 * i + 2))
            let b = randomTensor([ws[0]], seed: UInt64(10 * i + 3))
            func pass() -> (Tensor, Tensor) {
                let t = Tape(mode: .inference)
                let v = t.input(x)
                let out = t.conv2d(v, weight: t.input(w), bias: t.input(b), geometry: g, activation: .relu)
                let seed = randomTensor(out.value.shape, seed: 99, lo: 0.5, hi: 1.5)
                return (out.value, t.gradient(of: out, seed: seed, wrt: v))
            }
            WinogradFilterCacheControl.sixBySixTiles = false
            checkGradients([x], eps: 1e-3, atol: 5e-3) { t, v in
                t.conv2d(v[0], weight: t.input(w), bias: t.input(b), geometry: g, activation: .relu)
            }
            let (wantOut, wantDx) = pass()
            WinogradFilterCacheControl.sixBySixTiles = true
            let (out, dx) = pass()
            // outputs are sums of 144-400 products of values in [-1, 1] (RMS ~4-6): 2e-4 is ~4x the worst rounding
            // measured for F(4x4, 3x3); a ReLU kink crossed by that rounding would show as a large difference
            assertClose(out.scalars, wantOut.scalars.map(Double.init), atol: 2e-4, rtol: 0, "forward, case \(i)")
            assertClose(dx.scalars, wantDx.scalars.map(Double.init), atol: 2e-4, rtol: 0, "input gradient, case \(i)")
        }
    }
}
