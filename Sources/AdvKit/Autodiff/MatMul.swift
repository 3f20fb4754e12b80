import Foundation

// Matrix products on the tape (ONNX MatMul and Gemm) through `Kernels.sgemm`. The pullbacks call sgemm with
// beta = 1 straight into the inputs' gradient accumulators, so a batch broadcast along a dimension sums its
// gradient there for free. `linear(_:weight:bias:)` remains the fast path for Gemm(transB = 1, alpha = beta = 1).

extension Tape {
    /// How `matmul` lays out its operands: a is (batchA…, M, K), b is (batchB…, K, N), the result (batch…, M, N)
    /// with batch = broadcast(batchA, batchB); a rank-1 a is a (1, K) row and a rank-1 b a (K, 1) column, and those
    /// dimensions are dropped from the result (NumPy).
    struct MatMulPlan {
        var m: Int, k: Int, n: Int
        var batch: [Int], batchA: [Int], batchB: [Int]
        var shape: Shape
    }

    static func matmulPlan(_ a: Shape, _ b: Shape) throws -> MatMulPlan {
        guard a.rank >= 1, b.rank >= 1 else {
            throw AdvKitError.invalidData("matmul: shapes \(a) and \(b): scalars have no matrix product")
        }
        let ad = a.rank == 1 ? [1, a[0]] : a.dims, bd = b.rank == 1 ? [b[0], 1] : b.dims
        let m = ad[ad.count - 2], k = ad[ad.count - 1], kb = bd[bd.count - 2], n = bd[bd.count - 1]
        guard k == kb else {
            throw AdvKitError.invalidData("matmul: shapes \(a) and \(b): inner dimensions \(k) and \(kb) differ")
        }
        let batchA = Array(ad.dropLast(2)), batchB = Array(bd.dropLast(2))
        let batch: [Int]
        do { batch = try broadcastShape(Shape(batchA), Shape(batchB)).dims } catch {
            throw AdvKitError.invalidData("matmul: the batch dimensions of \(a) and \(b) do not broadcast")
        }
        var dims = batch
        if a.rank > 1 { dims.append(m) }
        if b.rank > 1 { dims.append(n) }
        guard dims.count <= Shape.maxRank else {
            throw AdvKitError.invalidData("matmul: shapes \(a) and \(b) give rank \(dims.count); AdvKit supports up to \(Shape.maxRank)")
        }
        return MatMulPlan(m: m, k: k, n: n, batch: batch, batchA: batchA, batchB: batchB, shape: Shape(dims))
    }

    /// The shape of `matmul(a, b)`; throws `AdvKitError.invalidData` naming both shapes when they do not fit.
    public static func matmulShape(_ a: Shape, _ b: Shape) throws -> Shape {
        try matmulPlan(a, b).shape
    }

    /// y = a·b with NumPy semantics (ONNX MatMul): matrices in the last two dimensions, batch dimensions broadcast,
    /// rank-1 operands promoted and their dimension dropped. ∂L/∂a = g·bᵀ and ∂L/∂b = aᵀ·g, each summed over the
    /// batch dimensions its operand was broadcast along. A (…, M, K) · (K, N) product is one sgemm of (…·M) rows.
    public func matmul(_ a: Variable, _ b: Variable) -> Variable {
        let p: MatMulPlan
        do { p = try Tape.matmulPlan(a.shape, b.shape) } catch { preconditionFailure("\(error)") }
        let (m, k, n) = (p.m, p.k, p.n)
        let batchCount = p.batch.reduce(1, *)
        // b without batch (or all of size 1): a's rows stacked make one product.
        let stacked = p.batchB.reduce(1, *) == 1 && p.batchA.reduce(1, *) == batchCount
        // Operand 0 counts output matrices, 1 a's, 2 b's (strides in matrices).
        let batches = RowLoop(dims: p.batch, strides: contiguousStrides(p.batch), broadcastStrides(p.batchA, to: p.batch),
                              broadcastStrides(p.batchB, to: p.batch))
        let out = newValue(p.shape)
        let po = out.storage.pointer, pa = a.value.storage.pointer, pb = b.value.storage.pointer
        if k == 0 {
            po.update(repeating: 0, count: out.count)
        } else if m > 0 && n > 0 {
            if stacked {
                Kernels.sgemm(transA: false, transB: false, m: batchCount * m, n: n, k: k, a: pa, lda: k, b: pb, ldb: n,
                              beta: 0, c: po, ldc: n)
            } else {
                batches.forEachElement { o, ia, ib in
                    Kernels.sgemm(transA: false, transB: false, m: m, n: n, k: k, a: pa + ia * m * k, lda: k,
                                  b: pb + ib * k * n, ldb: n, beta: 0, c: po + o * m * n, ldc: n)
                }
            }
        }
        let ia = a.index, ib = b.index
        return custom([a, b], value: out) { [unowned self] g in
            guard k > 0, m > 0, n > 0 else { return [nil, nil] }
            let pg = g.storage.pointer
            let pa = self.nodes[ia].value.storage.pointer, pb = self.nodes[ib].value.storage.pointer
            if let da = self.gradPointer(ia) {
                // da (M, K) += g (M, N) · bᵀ (N, K)
                if stacked {
                    Kernels.sgemm(transA: false, transB: true, m: batchCount * m, n: k, k: n, a: pg, lda: n, b: pb, ldb: n,
                                  beta: 1, c: da, ldc: k)
                } else {
                    batches.forEachElement { o, ja, jb in
                        Kernels.sgemm(transA: false, transB: true, m: m, n: k, k: n, a: pg + o * m * n, lda: n,
                                      b: pb + jb * k * n, ldb: n, beta: 1, c: da + ja * m * k, ldc: k)
                    }
                }
            }
            if let db = self.gradPointer(ib) {
                // db (K, N) += aᵀ (K, M) · g (M, N); stacked, the sum over the batch is the sum over all rows.
                if stacked {
                    Kernels.sgemm(transA: true, transB: false, m: k, n: n, k: batchCount * m, a: pa, lda: k, b: pg, ldb: n,
                                  beta: 1, c: db, ldc: n)
                } else {
                    batches.forEachElement { o, ja, jb in
                        Kernels.sgemm(transA: true, transB: false, m: k, n: n, k: m, a: pa + ja * m * k, lda: k,
                                      b: pg + o * m * n, ldb: n, beta: 1, c: db + jb * k * n, ldc: n)
                    }
                }
            }
            return [nil, nil]
        }
    }

    // MARK: Gemm

    /// The shape (M, N) of `gemm`: op(A) is (M, K), op(B) is (K, N), and C (if any) must broadcast to (M, N) one
    /// way (ONNX's unidirectional broadcasting). Throws `AdvKitError.invalidData` naming the shapes otherwise.
    public static func gemmShape(_ a: Shape, _ b: Shape, c: Shape?, transA: Bool = false, transB: Bool = false) throws -> Shape {
        guard a.rank == 2, b.rank == 2 else {
            throw AdvKitError.invalidData("gemm: A \(a) and B \(b) must both be matrices")
        }
        let (m, k) = transA ? (a[1], a[0]) : (a[0], a[1])
        let (kb, n) = transB ? (b[1], b[0]) : (b[0], b[1])
        guard k == kb else {
            throw AdvKitError.invalidData("gemm: op(A) of \(a) is (\(m), \(k)) but op(B) of \(b) is (\(kb), \(n))")
        }
        let shape = Shape(m, n)
        if let c {
            guard c.rank <= 2, (try? broadcastShape(c, shape)) == shape else {
                throw AdvKitError.invalidData("gemm: C \(c) does not broadcast to the product's shape \(shape)")
            }
        }
        return shape
    }

    /// Y = α·op(A)·op(B) + β·C (ONNX Gemm), op(X) = Xᵀ when its trans flag is set, C optional and broadcast to
    /// (M, N). ∂L/∂op(A) = α·g·op(B)ᵀ, ∂L/∂op(B) = α·op(A)ᵀ·g (transposed back when the flag is set), and
    /// ∂L/∂C = β·g summed over C's broadcast dimensions.
    public func gemm(_ a: Variable, _ b: Variable, c: Variable? = nil, transA: Bool = false, transB: Bool = false,
                     alpha: Float = 1, beta: Float = 1) -> Variable {
        let shape: Shape
        do { shape = try Tape.gemmShape(a.shape, b.shape, c: c?.shape, transA: transA, transB: transB) } catch {
            preconditionFailure("\(error)")
        }
        let m = shape[0], n = shape[1], k = transA ? a.shape[0] : a.shape[1]
        let lda = a.shape[1], ldb = b.shape[1]
        // Operand 0 walks Y densely, operand 1 walks C broadcast.
        let cLoop = c.map { RowLoop(dims: [m, n], strides: [n, 1], broadcastStrides($0.shape.dims, to: [m, n])) }
        let out = newValue(shape)
        let po = out.storage.pointer
        var accumulate = false
        if let c, let cLoop, beta != 0 {
            cLoop.gather(into: po, from: c.value.storage.pointer, scale: beta, accumulate: false)
            accumulate = true
        }
        if k > 0 && m > 0 && n > 0 {
            Kernels.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.value.storage.pointer,
                          lda: lda, b: b.value.storage.pointer, ldb: ldb, beta: accumulate ? 1 : 0, c: po, ldc: n)
        } else if !accumulate {
            po.update(repeating: 0, count: out.count)
        }
        let ia = a.index, ib = b.index, ic = c?.index
        return custom([a, b] + (c.map { [$0] } ?? []), value: out) { [unowned self] g in
            let pg = g.storage.pointer
            let pa = self.nodes[ia].value.storage.pointer, pb = self.nodes[ib].value.storage.pointer
            if k > 0 && m > 0 && n > 0, let da = self.gradPointer(ia) {
                if !transA {
                    // dA (M, K) += α g (M, N) · op(B)ᵀ (N, K); op(B)ᵀ is B itself when transB.
                    Kernels.sgemm(transA: false, transB: !transB, m: m, n: k, k: n, alpha: alpha, a: pg, lda: n, b: pb,
                                  ldb: ldb, beta: 1, c: da, ldc: k)
                } else {
                    // A is (K, M): dA += α op(B) (K, N) · gᵀ (N, M).
                    Kernels.sgemm(transA: transB, transB: true, m: k, n: m, k: n, alpha: alpha, a: pb, lda: ldb, b: pg,
                                  ldb: n, beta: 1, c: da, ldc: m)
                }
            }
            if k > 0 && m > 0 && n > 0, let db = self.gradPointer(ib) {
                if !transB {
                    // dB (K, N) += α op(A)ᵀ (K, M) · g (M, N); op(A)ᵀ is A itself when transA.
                    Kernels.sgemm(transA: !transA, transB: false, m: k, n: n, k: m, alpha: alpha, a: pa, lda: lda, b: pg,
                                  ldb: n, beta: 1, c: db, ldc: n)
                } else {
                    // B is (N, K): dB += α gᵀ (N, M) · op(A) (M, K).
                    Kernels.sgemm(transA: true, transB: transA, m: n, n: k, k: m, alpha: alpha, a: pg, lda: n, b: pa,
                                  ldb: lda, beta: 1, c: db, ldc: k)
                }
            }
            if let ic, let cLoop, beta != 0, let dc = self.gradPointer(ic) {
                cLoop.scatterAdd(from: pg, into: dc, scale: beta)
            }
            return [Tensor?](repeating: nil, count: ic == nil ? 2 : 3)
        }
    }
}
