#!/usr/bin/env python3
"""Run an ONNX model with onnxruntime (CPUExecutionProvider) on the `input` of a safetensors file.

    $PEERS scripts/onnx/check_onnxruntime.py Tests/Fixtures/onnx/cnn_dynamo.onnx Tests/Fixtures/onnx/cnn_dynamo.ref.safetensors

Prints the graph's inputs/outputs, its op types and opset, the output's shape and first row, and, when
the safetensors file holds `logits` (and `torch_logits`), the max |difference| to them.
"""
import sys

import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_path, tensors_path = sys.argv[1], sys.argv[2]
    import onnx
    import onnxruntime as ort
    from safetensors import safe_open

    proto = onnx.load(model_path, load_external_data=False)
    print("opset", {i.domain or "ai.onnx": i.version for i in proto.opset_import})
    print("ops", sorted({n.op_type for n in proto.graph.node}))

    with safe_open(tensors_path, "np") as f:
        refs = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata() or {}
    if meta.get("description"):
        print("description:", meta["description"])
    x = refs["input"].astype(np.float32)

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    for i in sess.get_inputs():
        print("input ", i.name, i.shape, i.type)
    for o in sess.get_outputs():
        print("output", o.name, o.shape, o.type)
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    print("output shape", out.shape, "row 0", np.array2string(out[0], precision=5, max_line_width=200))
    for key in ("logits", "torch_logits"):
        if key in refs:
            print(f"max |ort - {key}| = {float(np.abs(out - refs[key]).max()):.3e}")


if __name__ == "__main__":
    main()
