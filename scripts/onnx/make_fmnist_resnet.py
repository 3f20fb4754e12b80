#!/usr/bin/env python3
"""Train a small BN ResNet on Fashion-MNIST in PyTorch and export it to ONNX: the "bring your own model"
example of the README and of `advkit evaluate --model` (examples/fmnist_resnet_bn.onnx, committed).

The network: a 3x3 conv stem (8 channels) + BatchNorm + ReLU, three stages of two BasicBlocks (8, 16 stride 2,
32 stride 2; a 1x1 conv + BatchNorm shortcut where the shape changes), global average pooling, a linear layer
to the 10 classes. Trained 2 epochs with Adam (lr 1e-3, batch 128) on the 60,000 training images, seed 0,
then exported in eval mode (batch norm with running statistics) with a dynamic batch dimension.

    PEERS=/work/peers/.venv/bin/python
    $PEERS scripts/onnx/make_fmnist_resnet.py [--data /usr/share/datasets/fashion-mnist] [--out examples/fmnist_resnet_bn.onnx]

Prints the PyTorch test accuracy and onnxruntime's on the 10,000 test images (they must agree).
"""
import argparse
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(self, widths=(8, 16, 32), classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers += [Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default=os.path.join(REPO, "examples", "fmnist_resnet_bn.onnx"))
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    xtr = torch.tensor(read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz")), dtype=torch.float32).unsqueeze(1) / 255
    ytr = torch.tensor(read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz")), dtype=torch.int64)
    xte = torch.tensor(read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz")), dtype=torch.float32).unsqueeze(1) / 255
    yte = torch.tensor(read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz")), dtype=torch.int64)
    model = ResNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: last batch loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(xte[i:i + 1000]) for i in range(0, len(xte), 1000)])
    acc = (logits.argmax(1) == yte).float().mean().item()
    print(f"PyTorch test accuracy: {acc * 100:.2f}%")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.onnx.export(model, (xte[:1],), args.out, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    import onnxruntime as ort
    sess = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate([sess.run(None, {"image": xte[i:i + 1000].numpy()})[0] for i in range(0, len(xte), 1000)])
    ort_acc = float((ort_logits.argmax(1) == yte.numpy()).mean())
    print(f"onnxruntime test accuracy: {ort_acc * 100:.2f}% (max |logit difference| {np.abs(ort_logits - logits.numpy()).max():.2e})")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
