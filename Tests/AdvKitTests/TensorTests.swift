import AdvKit
import AdvKitTestSupport
import XCTest

final class TensorTests: XCTestCase {
    func testCopyOnWrite() {
        var a = Tensor(zeros: [2, 3])
        let b = a
        XCTAssertTrue(a.sharesStorage(with: b))
        a[1, 2] = 5
        XCTAssertFalse(a.sharesStorage(with: b), "the write copied")
        XCTAssertEqual(b[1, 2], 0)
        XCTAssertEqual(a[1, 2], 5)
    }

    func testShapesSlicesAndConversions() {
        let t = Tensor((0..<24).map(Float.init), shape: [4, 1, 2, 3])
        XCTAssertEqual(t.shape.itemCount, 6)
        XCTAssertEqual(t.batch(1..<3).scalars, (6..<18).map(Float.init))
        XCTAssertEqual(t.gather([3, 0]).scalars, (18..<24).map(Float.init) + (0..<6).map(Float.init))
        XCTAssertEqual(Tensor.concatenate([t.batch(0..<1), t.batch(1..<4)]), t)
        XCTAssertEqual(t.reshaped([4, 6]).shape, [4, 6])
        let img = Tensor(bytes: [0, 51, 255], shape: [3])
        XCTAssertEqual(img.scalars, [0, 0.2, 1])
        XCTAssertEqual(img.bytes, [0, 51, 255])
        XCTAssertEqual(Tensor([1, 5, 2, 9, 0, 3], shape: [2, 3]).argmaxRows(), [1, 0])
    }

    func testArithmeticAndReductions() {
        let a = Tensor([1, 2, 3]), b = Tensor([4, 5, 6])
        XCTAssertEqual((a + b).scalars, [5, 7, 9])
        XCTAssertEqual((b - a).scalars, [3, 3, 3])
        XCTAssertEqual((a * 2).scalars, [2, 4, 6])
        XCTAssertEqual(b.sum(), 15)
        XCTAssertEqual(a.mean(), 2)
        XCTAssertFalse(Tensor([1, .nan]).isFinite)
        XCTAssertEqual(Tensor([-3, 2]).maxAbs(), 3)
    }
}
