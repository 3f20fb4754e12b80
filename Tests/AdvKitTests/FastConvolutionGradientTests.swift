@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// The convolution routes of issue #18 on the tape, against central finite differences: depthwise2d.c
/// (depthwise, channels innermost), conv_batched.c (small planes, several images per GEMM) and winograd.c (3x3,
/// stride 1, padding 1). With the input alone as the target the tape asks for d(input) only, the attack's path
/// these routes serve; with the weights too, their forward pass feeds the weight gradients that stay in
/// conv2d.c / conv_general.c. (The routes are on unless ADVKIT_CONV_ROUTE=old; Winograd and the batched route
/// need AVX-512's kernel, without which these shapes run the old routes and the checks still hold.)
final class FastConvolutionGradientTests: XCTestCase {
    func testGradientsThroughTheNewRoutes() {
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
}
