#!/usr/bin/env python3
"""Reads a folder of adversarial PNGs written by `advkit attack --out FOLDER` with Pillow, and checks that they fool
the model as often as the attack reported: the model runs in onnxruntime on Pillow's pixels, nothing of AdvKit's.

    PY=/work/peers/.venv/bin/python          # numpy, Pillow, onnxruntime
    $PY scripts/data/readback.py ADV_FOLDER --model Tests/Fixtures/onnx/cnn_dynamo.onnx --json attack.json
    $PY scripts/data/readback.py ADV_FOLDER --npy-out back.npy --labels-out labels.npy   # for `advkit predict`

Class folders are labelled by their sorted names, and files are read in the order of sorted(os.walk(...)), as
torchvision's ImageFolder and AdvKit do. With --json (the attack's --json), the script compares its accuracy with the
reported robust_accuracy and exits non-zero when they differ.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

EXTENSIONS = (".png", ".jpg", ".jpeg")


def listing(root):
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    classes = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if not classes:
        return [(e, None) for e in entries if e.lower().endswith(EXTENSIONS)], None
    files = []
    for k, c in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(os.path.join(root, c), followlinks=True)):
            for n in sorted(names):
                if n.lower().endswith(EXTENSIONS) and not n.startswith("."):
                    files.append((os.path.relpath(os.path.join(dirpath, n), root), k))
    return files, classes


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--model", help="an .onnx classifier taking (N, C, H, W) pixels in [0, 1]")
    p.add_argument("--json", help="the attack's --json: compare with its robust_accuracy")
    p.add_argument("--npy-out", help="write Pillow's pixels as uint8 (N, H, W) or (N, H, W, 3)")
    p.add_argument("--labels-out", help="write the class folders' labels as int64")
    a = p.parse_args()
    files, classes = listing(a.folder)
    images = [np.asarray(Image.open(os.path.join(a.folder, f))) for f, _ in files]
    x = np.stack(images)
    labels = np.array([k for _, k in files], dtype=np.int64) if classes else None
    print(f"read {len(files)} PNGs with Pillow: array {x.shape} {x.dtype}, "
          f"{'classes ' + ', '.join(classes) if classes else 'no class folders'}")
    if a.npy_out:
        np.save(a.npy_out, x)
    if a.labels_out and labels is not None:
        np.save(a.labels_out, labels)
    if a.model:
        import onnxruntime as ort
        if labels is None:
            sys.exit("--model needs class folders for the labels")
        session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
        nchw = (x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)).astype(np.float32) / 255
        name = session.get_inputs()[0].name
        logits = np.concatenate([session.run(None, {name: nchw[i:i + 256]})[0] for i in range(0, len(nchw), 256)])
        correct = int((logits.argmax(1) == labels).sum())
        accuracy = correct / len(labels)
        print(f"Pillow + onnxruntime: accuracy {100 * accuracy:.2f}% ({correct} of {len(labels)} images)")
        if a.json:
            reported = json.load(open(a.json))["robust_accuracy"]
            same = abs(reported - accuracy) < 1e-12
            print(f"advkit attack reported robust accuracy {100 * reported:.2f}%: {'the same' if same else 'DIFFERENT'}")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
