#!/usr/bin/env python3
"""Check an ONNX model AdvKit wrote (`advkit train --model mine.onnx --out hardened.onnx`) with onnxruntime.

    PEERS=/work/peers/.venv/bin/python
    advkit predict --model hardened.onnx --limit 1000 --json predict.json
    $PEERS scripts/onnx/check_hardened.py hardened.onnx --fashion-mnist /usr/share/datasets/fashion-mnist \\
        --limit 1000 --advkit-json predict.json
    $PEERS scripts/onnx/check_hardened.py hardened.onnx --images x.npy --labels y.npy --advkit-json predict.json

Loads the model with onnx (checker, and: does it need any external data file?) and runs it in onnxruntime
(CPUExecutionProvider) on the images: a NumPy .npy or an IDX file (.gz or not), uint8 0-255 or float in [0,1],
laid out (N,H,W), (N,C,H,W) or (N,H,W,C); with --fashion-mnist DIR, its test split. The images are given to the
model as AdvKit gives them: [0,1] pixels times --input-scale, minus --mean, over --std (the options the model was
trained with, when its graph does not normalise), in the layout its input declares.

Prints the accuracy (with labels) and, with --advkit-json (the JSON of `advkit predict --json` on the same images),
the max |onnxruntime logit - AdvKit logit|, how many predictions agree and AdvKit's accuracy. With --tolerance T it
exits 1 when the max difference exceeds T or a prediction differs.
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np


def read_idx(path):
    """An IDX array (magic 0,0,type,ndim; big-endian dims): the MNIST/Fashion-MNIST files."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        sys.exit(f"{path}: not an IDX file")
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in types:
        sys.exit(f"{path}: IDX element type {data[2]:#x} is not one IDX defines")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=types[data[2]], offset=4 + 4 * ndim, count=int(np.prod(dims))).reshape(dims)


def read_array(path):
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    return read_idx(path)


def to_unit_nchw(x, channels):
    """[0,1] float32 (N,C,H,W). uint8 is divided by 255; (N,H,W) gains C=1; a last axis of 1 or 3 with a second that
    is neither is taken as NHWC."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255
    else:
        x = x.astype(np.float32)
        if x.size and (x.min() < 0 or x.max() > 1):
            sys.exit(f"float images must be in [0,1]; these span [{x.min()}, {x.max()}]")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        sys.exit(f"images of shape {x.shape}: want (N,H,W), (N,C,H,W) or (N,H,W,C)")
    if channels is not None and x.shape[1] != channels:
        sys.exit(f"the images have {x.shape[1]} channel(s), the model takes {channels}")
    return np.ascontiguousarray(x)


def floats(text):
    return None if text is None else np.array([float(v) for v in text.split(",")], dtype=np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--images", help=".npy or IDX images")
    p.add_argument("--labels", help=".npy or IDX labels")
    p.add_argument("--fashion-mnist", metavar="DIR", help="use DIR's t10k-images/labels (the test split)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--advkit-json", help="`advkit predict --json` output on the same images")
    p.add_argument("--input-scale", type=float, default=1.0)
    p.add_argument("--mean", help="per-channel mean, comma-separated")
    p.add_argument("--std", help="per-channel std, comma-separated")
    p.add_argument("--layout", choices=["nchw", "nhwc"], help="the model's input layout (default: from its declared shape)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--tolerance", type=float, help="exit 1 if max |logit difference| exceeds this or a prediction differs")
    a = p.parse_args()

    import onnx
    import onnxruntime as ort

    proto = onnx.load(a.model, load_external_data=False)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    onnx.checker.check_model(proto)
    print(f"{a.model}: {os.path.getsize(a.model)} bytes, producer {proto.producer_name} {proto.producer_version}, "
          f"opset {[(i.domain or 'ai.onnx', i.version) for i in proto.opset_import]}, {len(proto.graph.node)} nodes, "
          f"{len(proto.graph.initializer)} initializers; " + (f"EXTERNAL DATA in {len(external)}" if external else "self-contained")
          + "; onnx.checker: ok")

    if a.fashion_mnist:
        d = a.fashion_mnist
        pick = lambda stem: next(f"{d}/{stem}{ext}" for ext in ("", ".gz") if os.path.exists(f"{d}/{stem}{ext}"))
        images, labels = read_idx(pick("t10k-images-idx3-ubyte")), read_idx(pick("t10k-labels-idx1-ubyte"))
    elif a.images:
        images = read_array(a.images)
        labels = read_array(a.labels) if a.labels else None
    else:
        sys.exit("give --images (and --labels) or --fashion-mnist DIR")
    if a.limit:
        images = images[:a.limit]
        labels = None if labels is None else labels[:a.limit]

    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = inp.shape
    fixed = lambda v: v if isinstance(v, int) else None
    layout = a.layout
    if layout is None:
        layout = "nhwc" if len(shape) == 4 and fixed(shape[3]) in (1, 3) and fixed(shape[1]) not in (1, 3) else "nchw"
    channels = fixed(shape[3] if layout == "nhwc" else shape[1]) if len(shape) == 4 else None
    x = to_unit_nchw(images, channels)
    x = x * np.float32(a.input_scale)
    mean, std = floats(a.mean), floats(a.std)
    if mean is not None:
        x = x - mean.reshape(1, -1, 1, 1)
    if std is not None:
        x = x / std.reshape(1, -1, 1, 1)
    if layout == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    if len(shape) == 2:
        x = x.reshape(len(x), -1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    batch = 1 if fixed(shape[0]) == 1 else a.batch
    logits = np.concatenate([sess.run(None, {inp.name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
    logits = logits.reshape(len(x), -1)
    pred = logits.argmax(1)
    print(f"onnxruntime {ort.__version__}: {len(x)} images, logits {logits.shape}")
    if labels is not None:
        correct = int((pred == labels.astype(np.int64)).sum())
        print(f"accuracy {100 * correct / len(x):.2f}% ({correct} of {len(x)} images)")

    failed = False
    if a.advkit_json:
        with open(a.advkit_json) as f:
            j = json.load(f)
        ref = np.array(j["logits"], dtype=np.float64)
        if ref.shape != logits.shape:
            sys.exit(f"{a.advkit_json} has logits {ref.shape}, onnxruntime gave {logits.shape}: not the same images?")
        diff = float(np.abs(logits.astype(np.float64) - ref).max())
        scale = float(np.abs(ref).max())
        same = int((ref.argmax(1) == pred).sum())
        print(f"max |onnxruntime - AdvKit logit| = {diff:.3e} (largest |logit| {scale:.3g}); "
              f"predictions agree on {same} of {len(x)}; AdvKit's accuracy {100 * j['accuracy']:.2f}%")
        if a.tolerance is not None and (diff > a.tolerance or same != len(x)):
            failed = True
            print(f"FAILED: tolerance {a.tolerance}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
