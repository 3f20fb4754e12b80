extension Tape {
    /// Per-sample KL(softmax(p) ‖ softmax(q)) = Σ_k P_k (log P_k − log Q_k) for logits p, q of shape (N, K):
    /// a (N) vector, differentiable in both (TRADES back-propagates through the clean distribution too).
    ///
    ///     ∂KL/∂q = Q − P;     ∂KL/∂p_k = P_k · ((log P_k − log Q_k) − KL)
    public func klDivergence(_ p: Variable, _ q: Variable) -> Variable {
        precondition(p.shape == q.shape && p.shape.rank == 2, "klDivergence: shapes \(p.shape) and \(q.shape) must be equal (N, K)")
        let n = p.shape[0], k = p.shape[1]
        let logP = Kernels.logSoftmax(p.value), logQ = Kernels.logSoftmax(q.value)
        let lp = logP.storage.pointer, lq = logQ.storage.pointer
        var kl = Tensor(zeros: Shape(n))
        kl.withUnsafeMutableBufferPointer { out in
            for i in 0..<n {
                var s = 0.0
                for j in 0..<k { s += Double(exp(lp[i * k + j])) * Double(lp[i * k + j] - lq[i * k + j]) }
                out[i] = Float(s)
            }
        }
        return custom([p, q], value: kl) { [kl, logP, logQ] g in
            // The pullback keeps the tensors alive: pointers into them are valid only while they are.
            let lp = logP.storage.pointer, lq = logQ.storage.pointer
            var dp = Tensor(zeros: Shape(n, k)), dq = Tensor(zeros: Shape(n, k))
            dp.withUnsafeMutableBufferPointer { a in
                dq.withUnsafeMutableBufferPointer { b in
                    for i in 0..<n {
                        let gi = g.storage.pointer[i], d = kl.storage.pointer[i]
                        for j in 0..<k {
                            let pk = exp(lp[i * k + j]), qk = exp(lq[i * k + j])
                            a[i * k + j] = gi * pk * ((lp[i * k + j] - lq[i * k + j]) - d)
                            b[i * k + j] = gi * (qk - pk)
                        }
                    }
                }
            }
            return [dp, dq]
        }
    }
}

import Foundation
