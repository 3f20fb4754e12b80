#!/usr/bin/env python3
"""A small Fashion-MNIST CNN exported to ONNX with its Conv+BatchNormalization pairs NOT folded, for checking
`advkit train --model X.onnx --out Y.onnx` on the BN write-back path with onnxruntime (check_hardened.py).

    $PEERS scripts/onnx/make_unfolded_bn.py /tmp/bn_cnn.onnx [--data /usr/share/datasets/fashion-mnist]

Conv(1->8, no bias) + BN(eps 1e-3) + ReLU, Conv(8->16, stride 2, with bias) + BN(eps 1e-5) + ReLU, MaxPool, then a
Linear head; trained for one epoch on the first 6,000 training images (seed 0), BN statistics from that training.
Both PyTorch exporters fold a BN that follows a Conv into the Conv in eval mode; the legacy exporter with
training=PRESERVE and do_constant_folding=False keeps it (in inference form: the model is in eval mode).
"""
import argparse
import gzip

import numpy as np
import torch
import torch.nn as nn


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=1e-3)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    torch.manual_seed(0)
    x = torch.tensor(idx(a.data + "/train-images-idx3-ubyte.gz")[:6000], dtype=torch.float32)[:, None] / 255
    y = torch.tensor(idx(a.data + "/train-labels-idx1-ubyte.gz")[:6000], dtype=torch.int64)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net.train()
    for i in range(0, len(x), 64):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
        opt.step()
    net.eval()
    torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), a.out, dynamo=False, opset_version=17,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    import onnx
    m = onnx.load(a.out)
    print(a.out, [n.op_type for n in m.graph.node])


if __name__ == "__main__":
    main()
