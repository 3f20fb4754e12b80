#!/usr/bin/env python3
"""Make the Keras fixture `keras_cnn` of AdvKit's ONNX importer (Tests/Fixtures/onnx/).

A small NHWC Keras CNN (Conv2D valid, MaxPooling2D, Conv2D same, MaxPooling2D, Flatten, Dense, Dense),
seeded random weights, converted with tf2onnx. Input (N,28,28,1) NHWC.

    keras_cnn.onnx              tf2onnx's graph (it adds the NHWC<->NCHW Transposes around Conv/MaxPool)
    keras_cnn.ref.safetensors   float32: input, logits (onnxruntime), upstream, grad_input
                                (tf.GradientTape on a float64 copy of the model), torch_logits
                                (the name is shared with the PyTorch fixtures: here Keras' own logits)

It needs TensorFlow, so it runs in its own venv, not the peers' one:

    python3 -m venv /work/kerasvenv
    /work/kerasvenv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnxruntime==1.32.0 safetensors==0.8.0
    /work/kerasvenv/bin/python scripts/onnx/make_keras_fixture.py
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, "Tests", "Fixtures", "onnx")
LOGITS_ATOL = 1e-4   # onnxruntime float32 vs Keras float64 forward
OPSET = 17
BATCH = 3
NAME = "keras_cnn"


def build(dtype):
    import keras
    from keras import layers
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1), dtype=dtype, name="input"),
        layers.Conv2D(8, 3, activation="relu", dtype=dtype),                  # 28 -> 26, valid
        layers.MaxPooling2D(2, dtype=dtype),                                  # 26 -> 13
        layers.Conv2D(16, 3, padding="same", activation="relu", dtype=dtype), # 13 -> 13, same
        layers.MaxPooling2D(2, dtype=dtype),                                  # 13 -> 6
        layers.Flatten(dtype=dtype),                                          # NHWC order: 6*6*16
        layers.Dense(32, activation="relu", dtype=dtype),
        layers.Dense(10, dtype=dtype),
    ], name="keras_cnn")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import numpy as np
    import tensorflow as tf
    import keras
    import tf2onnx
    import onnx
    import onnxruntime as ort
    from fixture_io import save_f32

    keras.utils.set_random_seed(1234)
    m32 = build("float32")
    # Keras starts biases at zero and tf2onnx then drops them: give every bias a seeded random value.
    brng = np.random.default_rng(99)
    for layer in m32.layers:
        if getattr(layer, "bias", None) is not None:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, (0.1 * brng.standard_normal(bias.shape)).astype(np.float32)])
    m64 = build("float64")
    m64.set_weights([w.astype(np.float64) for w in m32.get_weights()])

    rng = np.random.default_rng(4321)
    x = rng.random((BATCH, 28, 28, 1), dtype=np.float64).astype(np.float32)

    spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def forward(inp):
        return {"logits": m32(inp, training=False)}

    path = os.path.join(args.out, NAME + ".onnx")
    tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET, output_path=path)

    proto = onnx.load(path, load_external_data=False)
    onnx.checker.check_model(path)
    ops = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in proto.graph.node})
    opset = {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}

    def vi(v):
        dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                for d in v.type.tensor_type.shape.dim]
        return f"{v.name}[{','.join(dims)}]"

    inputs = [vi(v) for v in proto.graph.input]
    outputs = [vi(v) for v in proto.graph.output]
    ext = sorted({kv.value for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                  for kv in t.external_data if kv.key == "location"})

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    logits = sess.run(None, {in_name: x})[0].astype(np.float32)

    x64 = tf.constant(x.astype(np.float64))
    upstream = rng.standard_normal(logits.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x64)
        k_logits = m64(x64, training=False)
        loss = tf.reduce_sum(k_logits * tf.constant(upstream.astype(np.float64)))
    grad = tape.gradient(loss, x64).numpy().astype(np.float32)
    k_logits = k_logits.numpy()
    k32 = m32(tf.constant(x), training=False).numpy()

    diff64 = float(np.abs(logits.astype(np.float64) - k_logits).max())
    diff32 = float(np.abs(logits - k32).max())
    assert diff64 <= LOGITS_ATOL, f"{NAME}: |onnxruntime - keras| = {diff64:.3g} > {LOGITS_ATOL}"
    dyn = ""
    for b in (1, 5):
        xb = rng.random((b, 28, 28, 1), dtype=np.float64).astype(np.float32)
        d = float(np.abs(sess.run(None, {in_name: xb})[0] - m64(tf.constant(xb.astype(np.float64))).numpy()).max())
        assert d <= LOGITS_ATOL, f"{NAME}: batch {b}: |onnxruntime - keras| = {d:.3g}"
        dyn += f" b{b}:{d:.2e}"

    meta = {
        "description": "small NHWC Keras CNN: Conv2D(8,3,valid,relu)-MaxPooling2D(2)-Conv2D(16,3,same,relu)-"
                       "MaxPooling2D(2)-Flatten-Dense(32,relu)-Dense(10); seeded random weights and biases; input NHWC",
        "exporter": f"tf2onnx.convert.from_function (tf.function around the Keras model), opset={OPSET}",
        "opset": str(opset.get("ai.onnx")),
        "opset_import": ",".join(f"{k}:{v}" for k, v in sorted(opset.items())),
        "dynamic_batch": "True",
        "input_layout": "NHWC",
        "grad_input_dtype": "float64 (tf.GradientTape on a float64 copy of the Keras model), stored as float32",
        "torch_logits_dtype": "Keras' own logits (float64 copy of the model), stored as float32; named "
                              "torch_logits like the PyTorch fixtures",
        "logits_source": "onnxruntime CPUExecutionProvider, 1 intra-op thread",
        "max_abs_diff_ort_vs_torch": f"{diff64:.3e}",
        "ops": ",".join(ops),
        "external_data": ",".join(ext) or "none",
        "graph_inputs": ";".join(inputs),
        "graph_outputs": ";".join(outputs),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "torch": "none (Keras fixture)",
    }
    ref = os.path.join(args.out, NAME + ".ref.safetensors")
    save_f32(ref, {"input": x, "logits": logits, "upstream": upstream, "grad_input": grad,
                   "torch_logits": k_logits.astype(np.float32)}, meta)

    print(f"versions tf {tf.__version__} keras {keras.__version__} tf2onnx {tf2onnx.__version__} "
          f"onnx {onnx.__version__} onnxruntime {ort.__version__}")
    print(f"== {NAME}  (tf2onnx, opset {opset.get('ai.onnx')}, params {m32.count_params()})")
    print(f"   opset_import {opset}")
    print(f"   inputs {inputs}  outputs {outputs}")
    print(f"   ops ({len(ops)}) {ops}")
    print(f"   external data: {ext or 'none'}")
    print(f"   max|ort - keras64| = {diff64:.3e}   max|ort - keras32| = {diff32:.3e}{dyn}")
    print(f"   sizes {NAME}.onnx {os.path.getsize(path)}, {NAME}.ref.safetensors {os.path.getsize(ref)}")


if __name__ == "__main__":
    main()
