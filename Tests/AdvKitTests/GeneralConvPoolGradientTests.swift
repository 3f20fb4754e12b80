@_spi(Testing) import AdvKit
import AdvKitTestSupport
import XCTest

/// The general convolution and pooling on the tape: gradients against finite differences, the dispatch of plain
/// geometries to the existing nodes, the geometry types' output sizes and validation.
final class GeneralConvPoolGradientTests: XCTestCase {
    // MARK: gradients

    func testGeneralConvGradients() {
        let cases: [(String, Shape, Shape, Conv2DGeometry)] = [
            ("groups 2, dilation 2, strides (2,1), pads (1,0,2,1)", [2, 4, 7, 6], [6, 2, 3, 3],
             Conv2DGeometry(strides: (2, 1), pads: (1, 0, 2, 1), dilations: (2, 2), groups: 2)),
            ("depthwise, stride 2, pads (1,1,1,1)", [2, 3, 7, 6], [3, 1, 3, 3],
             Conv2DGeometry(strides: (2, 2), pads: (1, 1, 1, 1), groups: 3)),
            ("depthwise x2, dilation (1,2), pads (0,2,1,0)", [1, 3, 6, 7], [6, 1, 3, 2],
             Conv2DGeometry(pads: (0, 2, 1, 0), dilations: (1, 2), groups: 3)),
            ("groups 1, kernel 5x3, strides (1,2)", [2, 2, 7, 7], [3, 2, 5, 3], Conv2DGeometry(strides: (1, 2), pads: (2, 1, 2, 1))),
            ("groups 2, pointwise", [2, 4, 5, 5], [4, 2, 1, 1], Conv2DGeometry(groups: 2)),
        ]
        for (i, (name, xs, ws, g)) in cases.enumerated() {
            let x = randomTensor(xs, seed: UInt64(10 * i + 1)), w = randomTensor(ws, seed: UInt64(10 * i + 2))
            let b = randomTensor([ws[0]], seed: UInt64(10 * i + 3))
            checkGradients([x, w, b]) { t, v in t.conv2d(v[0], weight: v[1], bias: v[2], geometry: g) }
            checkGradients([x, w]) { t, v in t.conv2d(v[0], weight: v[1], bias: nil, geometry: g) }
            // The fused activation, then the existing max-pool (which writes the conv's gradient premasked).
            checkGradients([x, w, b]) { t, v in
                let y = t.conv2d(v[0], weight: v[1], bias: v[2], geometry: g, activation: .relu)
                return y.shape[2] >= 2 && y.shape[3] >= 2 ? t.maxPool2d(y, kernel: 2, stride: 1) : y
            }
            _ = name
        }
    }

    func testGeneralPoolGradients() {
        let x = randomTensor([2, 2, 7, 6], seed: 41)
        let geometries = [
            Pool2DGeometry(kernel: (3, 3), strides: (2, 2), pads: (1, 1, 1, 1), ceilMode: true),
            Pool2DGeometry(kernel: (2, 3), strides: (2, 1), pads: (1, 0, 0, 2)),
            Pool2DGeometry(kernel: (2, 2), strides: (2, 2), ceilMode: true),  // 7 rows: a last window half outside
            Pool2DGeometry(kernel: (2, 2), strides: (1, 1), pads: (1, 1, 0, 0), dilations: (2, 2)),
        ]
        for g in geometries {
            checkGradients([x]) { t, v in t.maxPool2d(v[0], geometry: g) }
            for include in [false, true] {
                checkGradients([x]) { t, v in t.avgPool2d(v[0], geometry: g, countIncludePad: include) }
            }
        }
        checkGradients([x]) { t, v in t.globalAvgPool2d(v[0]) }
        checkGradients([randomTensor([2, 3, 5, 5], seed: 42)]) { t, v in t.globalAvgPool2d(v[0]) }
    }

    // MARK: dispatch

    func testPlainConvGeometryRecordsTheExistingNode() {
        let x = randomTensor([2, 3, 8, 7], seed: 1), w = randomTensor([4, 3, 3, 3], seed: 2), b = randomTensor([4], seed: 3)
        for (stride, padding) in [(1, 0), (1, 1), (2, 1)] {
            for act in [FusedActivation.none, .relu] {
                func run(_ general: Bool) -> (String, [Tensor]) {
                    let t = Tape()
                    let xv = t.input(x), wv = t.input(w), bv = t.input(b)
                    let y = general
                        ? t.conv2d(xv, weight: wv, bias: bv, geometry: Conv2DGeometry(strides: (stride, stride),
                                   pads: (padding, padding, padding, padding)), activation: act)
                        : t.conv2d(xv, weight: wv, bias: bv, stride: stride, padding: padding, activation: act)
                    let name = t.nodeOperation(y.index)
                    return (name, [y.value] + t.gradients(of: t.scale(y, by: 1.5).sum(), wrt: [xv, wv, bv]))
                }
                let (generalName, generalValues) = run(true), (_, plainValues) = run(false)
                XCTAssertEqual(generalName, "conv2d", "stride \(stride) padding \(padding)")
                for (a, p) in zip(generalValues, plainValues) {
                    XCTAssertEqual(a.scalars, p.scalars, "same node, same bits: stride \(stride) padding \(padding) \(act)")
                }
            }
        }
        let t = Tape()
        let general = [Conv2DGeometry(strides: (2, 1)), Conv2DGeometry(pads: (1, 1, 1, 0)),
                       Conv2DGeometry(dilations: (2, 2)), Conv2DGeometry(groups: 3)]
        for g in general {
            let wv = t.input(g.groups == 3 ? randomTensor([3, 1, 3, 3], seed: 4) : w)
            XCTAssertEqual(t.nodeOperation(t.conv2d(t.input(x), weight: wv, bias: nil, geometry: g).index), "conv2dGeneral", "\(g)")
        }
    }

    func testPlainPoolGeometryRecordsTheExistingNodes() {
        let t = Tape()
        let x = t.input(randomTensor([1, 2, 7, 9], seed: 5))
        // Ceil mode that rounds to the floor size (7 rows, 9 columns: (7-3)/2 and (9-3)/2 are exact) stays plain.
        let plain = [Pool2DGeometry(kernel: (2, 2), strides: (2, 2)), Pool2DGeometry(kernel: (3, 3), strides: (2, 2), ceilMode: true)]
        for g in plain {
            XCTAssertEqual(t.nodeOperation(t.maxPool2d(x, geometry: g).index), "maxPool", "\(g)")
            XCTAssertEqual(t.nodeOperation(t.avgPool2d(x, geometry: g, countIncludePad: true).index), "avgPool", "\(g)")
        }
        let general = [Pool2DGeometry(kernel: (2, 2), strides: (2, 2), ceilMode: true),  // 7 columns: one more window
                       Pool2DGeometry(kernel: (2, 3), strides: (2, 2)), Pool2DGeometry(kernel: (2, 2), strides: (2, 1)),
                       Pool2DGeometry(kernel: (3, 3), strides: (1, 1), pads: (1, 1, 1, 1))]
        for g in general {
            XCTAssertEqual(t.nodeOperation(t.maxPool2d(x, geometry: g).index), "maxPoolGeneral", "\(g)")
            XCTAssertEqual(t.nodeOperation(t.avgPool2d(x, geometry: g, countIncludePad: false).index), "avgPoolGeneral", "\(g)")
        }
        let square = t.globalAvgPool2d(t.input(randomTensor([2, 3, 5, 5], seed: 6)))
        XCTAssertEqual(t.nodeOperation(square.index), "avgPool")
        XCTAssertEqual(square.shape, [2, 3, 1, 1])
        let oblong = t.globalAvgPool2d(x)
        XCTAssertEqual(t.nodeOperation(oblong.index), "avgPoolGeneral")
        XCTAssertEqual(oblong.shape, [1, 2, 1, 1])
        let v = x.value.scalars
        for c in 0..<2 {
            let mean = v[(c * 63)..<((c + 1) * 63)].reduce(0.0) { $0 + Double($1) } / 63
            XCTAssertEqual(Double(oblong.value.scalars[c]), mean, accuracy: 1e-6)  // float32 sum of 63 values in [-1, 1]
        }
    }

    /// An attack's loop through the new nodes allocates nothing per step once warm.
    func testAttackLoopThroughGeneralNodesReusesBuffers() {
        let tape = Tape()
        let w = randomTensor([6, 1, 3, 3], seed: 7), images = randomTensor([2, 3, 9, 9], seed: 8)
        var allocated: [Int] = []
        for _ in 0..<4 {
            tape.reset()
            let x = tape.input(images)
            var y = tape.conv2d(x, weight: tape.input(w), bias: nil,
                                geometry: Conv2DGeometry(strides: (2, 1), pads: (1, 0, 1, 2), groups: 3), activation: .relu)
            y = tape.maxPool2d(y, geometry: Pool2DGeometry(kernel: (3, 3), strides: (2, 2), pads: (1, 1, 1, 1), ceilMode: true))
            y = tape.avgPool2d(y, geometry: Pool2DGeometry(kernel: (2, 2), strides: (1, 1), pads: (0, 0, 1, 1)), countIncludePad: true)
            _ = tape.gradient(of: tape.globalAvgPool2d(y).sum(), wrt: x)
            allocated.append(tape.allocatedBuffers)
        }
        XCTAssertEqual(allocated[2], allocated[1], "no new buffers on the third step: \(allocated)")
        XCTAssertEqual(allocated[3], allocated[1], "no new buffers on the fourth step: \(allocated)")
    }

    // MARK: geometry

    func testPoolOutputSizesFollowPyTorch() {
        // (H, kernel, stride, pad, ceil) -> output length; PyTorch's pooling_output_shape.
        let cases: [(Int, Int, Int, Int, Bool, Int)] = [
            (5, 2, 2, 0, false, 2), (5, 2, 2, 0, true, 3),
            (5, 2, 2, 1, true, 3),   // ceil gives 4, but the 4th window would start in the bottom padding
            (6, 3, 2, 1, true, 4), (6, 3, 2, 1, false, 3),
            (9, 4, 4, 2, true, 3),   // nn.AvgPool2d(4, 4, padding=2, ceil_mode=True) on 9x9 (pytorch/pytorch#116420)
            (4, 3, 2, 1, true, 3), (7, 3, 2, 0, true, 3), (112, 3, 2, 1, false, 56),
        ]
        for (h, k, s, p, ceil, want) in cases {
            let g = Pool2DGeometry(kernel: (k, k), strides: (s, s), pads: (p, p, p, p), ceilMode: ceil)
            XCTAssertEqual(g.outputSize(height: h, width: h).h, want, "H \(h) k \(k) s \(s) p \(p) ceil \(ceil)")
        }
        let dilated = Pool2DGeometry(kernel: (3, 2), strides: (1, 2), pads: (1, 0, 0, 1), dilations: (2, 3))
        XCTAssertTrue(dilated.outputSize(height: 10, width: 11) == (7, 5))  // (10+1-4-1)/1+1, (11+1-3-1)/2+1
    }

    func testConvGeometryOutputSizeAndValidation() throws {
        let g = Conv2DGeometry(strides: (2, 1), pads: (1, 0, 2, 1), dilations: (2, 1), groups: 2)
        XCTAssertEqual(g.outputShape(input: [3, 4, 9, 7], weight: [6, 2, 3, 3]), [3, 6, 4, 6])  // (9+3-5)/2+1, (7+1-3)/1+1
        try g.validate(input: [3, 4, 9, 7], weight: [6, 2, 3, 3], bias: [6])
        func rejects(_ g: Conv2DGeometry, _ x: Shape, _ w: Shape, _ b: Shape? = nil, _ words: String,
                     line: UInt = #line) {
            XCTAssertThrowsError(try g.validate(input: x, weight: w, bias: b), line: line) { error in
                guard case let .invalidData(message)? = error as? AdvKitError else { return XCTFail("\(error)", line: line) }
                XCTAssertTrue(message.contains(words), "\(message) should say \(words)", line: line)
            }
        }
        rejects(Conv2DGeometry(groups: 3), [1, 4, 5, 5], [3, 1, 3, 3], nil, "not divisible by 3 groups")
        rejects(Conv2DGeometry(groups: 2), [1, 4, 5, 5], [3, 2, 3, 3], nil, "output channels are not divisible")
        rejects(Conv2DGeometry(groups: 2), [1, 4, 5, 5], [4, 4, 3, 3], nil, "needs 2")
        rejects(Conv2DGeometry(dilations: (3, 1)), [1, 1, 5, 5], [1, 1, 3, 3], nil, "larger than the padded input")
        rejects(Conv2DGeometry(strides: (0, 1)), [1, 1, 5, 5], [1, 1, 3, 3], nil, "strides must be >= 1")
        rejects(Conv2DGeometry(pads: (0, -1, 0, 0)), [1, 1, 5, 5], [1, 1, 3, 3], nil, "pads must be >= 0")
        rejects(Conv2DGeometry(dilations: (1, 0)), [1, 1, 5, 5], [1, 1, 3, 3], nil, "dilations must be >= 1")
        rejects(Conv2DGeometry(groups: 0), [1, 1, 5, 5], [1, 1, 3, 3], nil, "groups must be >= 1")
        rejects(Conv2DGeometry(), [1, 1, 5, 5], [2, 1, 3, 3], [3], "bias must be [2]")
        rejects(Conv2DGeometry(), [1, 5, 5], [2, 1, 3, 3], nil, "(N,C,H,W)")

        let p = Pool2DGeometry(kernel: (2, 2), strides: (2, 2))
        try p.validate(input: [1, 1, 2, 2])
        XCTAssertThrowsError(try Pool2DGeometry(kernel: (2, 2), strides: (2, 2), pads: (2, 0, 0, 0)).validate(input: [1, 1, 4, 4]))
        XCTAssertThrowsError(try Pool2DGeometry(kernel: (3, 3), strides: (1, 1)).validate(input: [1, 1, 2, 4]))
        XCTAssertThrowsError(try Pool2DGeometry(kernel: (0, 2), strides: (1, 1)).validate(input: [1, 1, 4, 4]))
        XCTAssertThrowsError(try Pool2DGeometry(kernel: (2, 2), strides: (1, 0)).validate(input: [1, 1, 4, 4]))
    }
}
