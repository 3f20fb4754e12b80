@_spi(Support) import AdvKit
import Foundation

/// What `advkit attack --out` writes, told by the name: `.npy` (float32, in the input's layout), a folder (a name
/// without extension, or an existing folder: one 8-bit PNG per image), or IDX (`.idx`, and any other extension, as
/// before).
enum AttackOutput {
    enum Format: Equatable { case idx, npy, pngFolder }

    static func format(_ path: String) throws -> Format {
        var isDir: ObjCBool = false
        if path.hasSuffix("/") || (FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue) { return .pngFolder }
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "": return .pngFolder
        case "npy": return .npy
        case "png", "jpg", "jpeg":
            throw AdvKitError.invalidArgument("--out \(path): one image file cannot hold a batch; give a folder name (one PNG per image), or X.npy / X.idx")
        case "npz": throw AdvKitError.invalidArgument("--out \(path): .npz is read, not written; give X.npy, X.idx or a folder")
        default: return .idx
        }
    }

    /// Checks `--out` before any work: a file path whose folder exists, or a folder that exists or can be made.
    static func check(_ path: String) throws {
        if try format(path) == .pngFolder {
            try OutputPath.checkDirectory(path, option: "--out")
        } else {
            try OutputPath.checkFile(path, option: "--out")
        }
    }

    /// The ball `attack` stays in, from its settings (nil for attacks without one: DeepFool, C&W, JSMA).
    static func ball(of attack: Attack) -> EightBit.Ball? {
        guard case let .float(e)? = attack.settings["epsilon"], case let .string(n)? = attack.settings["norm"], let norm = Norm(rawValue: n) else {
            return nil
        }
        return EightBit.Ball(norm: norm, epsilon: e)
    }

    /// Writes `result`'s adversarial images to `path`. For a folder of 8-bit PNGs the images are first put on the
    /// 8-bit grid inside the attack's ball and measured again on `model`, and that result is returned: what the
    /// command reports is what it wrote.
    static func write(_ result: AttackResult, attack: Attack, to path: String, test: Dataset, model: Classifier) throws -> AttackResult {
        switch try format(path) {
        case .idx:
            try IDX.write(result.adversarial, to: path)
            return result
        case .npy:
            try NumPy.write(npyArray(result.adversarial, layout: test.source?.layout), to: path)
            return result
        case .pngFolder:
            let c = result.adversarial.shape[1]
            guard c == 1 || c == 3 else { throw AdvKitError.invalidArgument("--out \(path): PNG files hold 1 or 3 channels, these images have \(c); give X.npy") }
            let rounded = result.onEightBitGrid(model: model, clean: test.images, ball: ball(of: attack))
            let names = test.imageNames ?? numberedNames(test.count)
            try ImageFolder.write(rounded.adversarial, names: names, to: path, emptyFolders: test.source?.classFolders ?? [])
            print(String(format: "8-bit PNG output: pixels rounded to k/255 inside the ball; the figures below are those of the %d written images (before rounding: robust accuracy %.2f%%, success rate %.2f%%)",
                         test.count, result.robustAccuracy * 100, result.successRate * 100))
            print("adversarial classes: " + classCounts(rounded.outcomes.map(\.adversarialPrediction), names: test.classNames))
            return rounded
        }
    }

    /// "00000.png", "00001.png", ... for images that came without file names.
    static func numberedNames(_ n: Int) -> [String] {
        let width = max(5, String(max(n - 1, 0)).count)
        return (0..<n).map { i in String(repeating: "0", count: width - String(i).count) + "\(i).png" }
    }

    /// float32 images in `layout`: (N, H, W) for one channel read as such, (N, H, W, C), or (N, C, H, W).
    static func npyArray(_ x: Tensor, layout: ArrayLayout?) -> NumPy.Array {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        switch layout {
        case .nhw? where c == 1:
            return NumPy.Array(type: .float32, shape: [n, h, w], values: x.scalars)
        case .nhwc?, .nhw?:
            var v = [Float](repeating: 0, count: x.count)
            x.withUnsafeBufferPointer { p in
                for i in 0..<n { for ch in 0..<c { for y in 0..<h { for xx in 0..<w {
                    v[((i * h + y) * w + xx) * c + ch] = p[((i * c + ch) * h + y) * w + xx]
                } } } }
            }
            return NumPy.Array(type: .float32, shape: [n, h, w, c], values: v)
        default:
            return NumPy.Array(type: .float32, shape: [n, c, h, w], values: x.scalars)
        }
    }
}

/// The JSON's per-image records: AttackOutcome's Codable form (the same keys; `target` only when there is one), built
/// directly instead of encoded with JSONEncoder and parsed back (that round trip and JSONSerialization took ~0.2 s
/// of `advkit attack --json` on 1,024 images). advkitTests decode a written record as AttackOutcome and compare
/// its keys with JSONEncoder's.
func outcomeRecords(_ outcomes: [AttackOutcome]) -> [[String: Any]] {
    outcomes.map { o in
        var r: [String: Any] = ["label": o.label, "success": o.success, "clean_prediction": o.cleanPrediction,
                                "clean_confidence": o.cleanConfidence, "adversarial_prediction": o.adversarialPrediction,
                                "adversarial_confidence": o.adversarialConfidence, "l0": o.l0, "l2": o.l2, "linf": o.linf]
        if let t = o.target { r["target"] = t }
        return r
    }
}

/// "T-shirt/top 107, Trouser 99, ...": how many of `classes` fall in each class, by name, in class order.
func classCounts(_ classes: [Int], names: [String]) -> String {
    var counts: [Int: Int] = [:]
    for c in classes { counts[c, default: 0] += 1 }
    return counts.keys.sorted().map { k in "\(names.indices.contains(k) ? names[k] : String(k)) \(counts[k]!)" }.joined(separator: ", ")
}
