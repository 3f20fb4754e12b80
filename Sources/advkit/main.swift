import AdvKit
import Foundation
let m = Model(.cnn)
try! m.load(from: "../shared/peers/models/fmnist_cnn.safetensors")
let test = try! Dataset.mnistFormat(directory: Dataset.defaultFashionMNISTDirectory, split: .test)
let d = test.prefix(1024)
let t0 = Date()
let z = m.logits(d.images, batchSize: 128)
print(Date().timeIntervalSince(t0))
print(z.row(0)); print(z.row(1))
print(m.accuracy(d.images, labels: d.labels))
