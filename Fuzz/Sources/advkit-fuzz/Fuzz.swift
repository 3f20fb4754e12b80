import AdvKit
import Foundation

/// One input for libFuzzer. The first byte picks the parser (% 6: IDX, CIFAR-10, safetensors, ONNX, NumPy .npy and
/// .npz, PNG and JPEG through libpng/libjpeg-turbo); the rest is the file. Every parser must either return a value or
/// throw AdvKitError: a crash, a trap or a hang is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 1 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    let data = Data(bytes.dropFirst())
    switch bytes[0] % 6 {
    case 0:
        if let f = try? IDX.parse(data) { precondition(f.values.count == f.dims.reduce(1, *)) }
    case 1:
        if let d = try? CIFAR10.parse(data) { precondition(d.images.count == d.count * 3072) }
    case 2:
        if let t = try? Safetensors.parse(data) { for (_, v) in t.tensors { precondition(v.count == v.shape.count) } }
    case 3:
        // No folder: a tensor with external data must throw, never touch the file system.
        if let m = try? ONNXModel.parse(data) {
            for (_, t) in m.graph.initializers {
                switch t.values {
                case let .float(x): precondition(x.count == t.count)
                case let .int(v): precondition(v.count == t.count)
                }
            }
        }
    case 4:
        // The same bytes as a .npy and as an .npz, every member read (a member is a .npy).
        if let a = try? NumPy.parse(data) { precondition(a.values.count == a.shape.reduce(1, *)) }
        if let z = try? NPZ.Archive(data) {
            for k in z.keys { if let a = try? z.array(k) { precondition(a.values.count == a.shape.reduce(1, *)) } }
        }
    default:
        // libpng and libjpeg behind the setjmp shim: a damaged file must come back as an error. A small pixel
        // budget keeps a header claiming a huge picture from spending the run allocating it.
        if let img = try? ImageDecoding.decode(data, maxPixels: 1 << 20) {
            precondition(img.samples.count == img.width * img.height * img.channels)
        }
    }
    return 0
}

// SwiftPM links an executable target with its entry point renamed to `<target>_main`; libFuzzer's driver is
// started from there (LLVMFuzzerRunDriver is libFuzzer's documented entry for programs with their own main).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafeRawPointer, Int) -> CInt) -> CInt

@_cdecl("advkit_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v) { data, size in fuzz(data, size) }
}
