@_spi(Support) import AdvKit
import AdvKitTestSupport
import Foundation
import XCTest

/// `advkit attack --json` writes its per-image records and the document itself without JSONEncoder or
/// JSONSerialization (they took ~0.2 s for 1,024 images): the records must still be AttackOutcome's Codable form,
/// and the document plain JSON with every value in place.
final class AttackJSONTests: XCTestCase {
    func testPerImageRecordsAreAttackOutcomesCodableForm() throws {
        let dir = temporaryDirectory()
        let d = squaresDataset(count: 24, classes: 4, size: 28, seed: 3)
        try Gzip.compress(IDX.encode(d.images.reshaped([24, 28, 28]), as: .uint8))
            .write(to: URL(fileURLWithPath: "\(dir)/t10k-images-idx3-ubyte.gz"))
        try IDX.encodeLabels(d.labels).write(to: URL(fileURLWithPath: "\(dir)/t10k-labels-idx1-ubyte"))
        let model = dir + "/m.safetensors"
        try Model(.mlp, inputShape: [1, 28, 28], classes: 10, seed: 0).save(to: model)
        for extra in [[String](), ["--targeted", "--target-class", "2"]] {
            let (code, _, err) = try runAdvkit(["attack", "--arch", "mlp", "--model", model, "--dataset", "mnist", "--data-dir", dir,
                                                "--attack", "pgd", "--steps", "3", "--quiet", "--out", dir + "/a.idx",
                                                "--json", dir + "/a.json"] + extra)
            XCTAssertEqual(code, 0, err)
            let text = try Data(contentsOf: URL(fileURLWithPath: dir + "/a.json"))
            let j = try readJSONObject(dir + "/a.json")
            let records = j["per_image"] as! [[String: Any]]
            XCTAssertEqual(records.count, 24)
            for r in records {
                // decodes as an AttackOutcome, and JSONEncoder writes exactly the same keys for it
                let outcome = try JSONDecoder().decode(AttackOutcome.self, from: JSONSerialization.data(withJSONObject: r))
                let encoded = try JSONSerialization.jsonObject(with: JSONEncoder().encode(outcome)) as! [String: Any]
                XCTAssertEqual(Set(r.keys), Set(encoded.keys), "\(extra)")
                XCTAssertEqual(outcome.target, extra.isEmpty ? nil : 2)
                XCTAssertEqual(Float(r["linf"] as! Double), outcome.linf, "a Float's text reads back as the same Float")
            }
            XCTAssertEqual(j["robust_accuracy"] as! Double,
                           Double(records.filter { $0["adversarial_prediction"] as! Int == $0["label"] as! Int }.count) / 24,
                           accuracy: 1e-12)
            XCTAssertNotNil(j["median_l2"], "nil figures are written as null, not dropped")
            XCTAssertEqual((j["settings"] as! [String: Any])["random_start"] as? Bool, true)
            XCTAssertEqual((j["settings"] as! [String: Any])["steps"] as? Int, 3)
            // keys sorted at the top level
            let s = String(decoding: text, as: UTF8.self)
            let top = s.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { String($0.dropFirst(3).prefix { $0 != "\"" }) }
            XCTAssertEqual(top, top.sorted())
        }
    }
}
