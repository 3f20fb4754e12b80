#!/usr/bin/env python3
"""Make the ONNX test fixtures of AdvKit's ONNX importer (Tests/Fixtures/onnx/).

For each fixture NAME it writes

    NAME.onnx               the exported graph (plus NAME.onnx.data or similar when the exporter
                            writes its weights as external data: kept exactly as the exporter wrote it)
    NAME.ref.safetensors    float32 tensors
                              input        the batch fed to the model (NCHW), uniform in [0, 1)
                              logits       onnxruntime's output on `input` (CPUExecutionProvider)
                              upstream     a fixed normal(0, 1) tensor of the logits' shape
                              grad_input   d sum(logits * upstream) / d input, from PyTorch in float64
                              torch_logits PyTorch's own logits (float64 forward, stored as float32)
                            and __metadata__: description, exporter, opset, versions, names.

Run it with the peers' venv (it has torch, torchvision, onnx, onnxruntime, onnxscript, safetensors):

    PEERS=/work/peers/.venv/bin/python
    $PEERS scripts/onnx/make_fixtures.py                    # -> Tests/Fixtures/onnx/
    $PEERS scripts/onnx/make_fixtures.py --only cnn_dynamo,ops_zoo_legacy
    $PEERS scripts/onnx/make_fixtures.py --full --out-full /tmp/onnx-full   # full-size models, not committed
    $PEERS scripts/onnx/make_fixtures.py --full --only mobilenet_v2_cifar --out-full /tmp/onnx-full   # one of them

Everything is seeded: the same versions give the same files.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, "Tests", "Fixtures", "onnx")
DEFAULT_WEIGHTS = "/work/shared/peers/models/fmnist_cnn.safetensors"

# onnxruntime and the float64 PyTorch forward must agree this closely (float32 rounding through a
# few layers; the models here are small and their logits are O(1..10)).
LOGITS_ATOL = 1e-4

BATCH = 3

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

class FmnistCNN(nn.Module):
    """The reference CNN of /work/shared/peers/bench_torch.py (same layers, same parameter names)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(1024, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def load_cnn(weights):
    from safetensors.torch import load_file
    model = FmnistCNN()
    sd = load_file(weights)
    model.load_state_dict(sd, strict=True)
    return model.eval()


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity (or 1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class SmallResNetNorm(nn.Module):
    """A CIFAR-size ResNet whose graph starts with (x - mean) / std, per channel ([1,3,1,1] constants)."""

    def __init__(self, num_classes=10):
        super().__init__()
        # CIFAR-10 channel statistics, as commonly used.
        self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)     # stride 2, 1x1 downsample
        self.layer3 = BasicBlock(16, 16, 1)
        # A BatchNorm that follows a ReLU, not a Conv: both exporters fold Conv->BN into the Conv,
        # so this one is what keeps a BatchNormalization node in the graph.
        self.bn_out = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn_out(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


def make_torchvision_resnet(widths=(4, 8, 16, 32), blocks=(1, 1, 1, 1), num_classes=10, cifar_stem=True):
    """torchvision's ResNet class with narrow widths.

    torchvision.models.resnet.ResNet fixes its widths (64, 128, 256, 512) in __init__, so this
    subclass re-runs the same construction with the widths given: it uses torchvision's own
    BasicBlock, conv3x3/conv1x1, ResNet._make_layer (which adds the 1x1 conv + BN downsample) and
    ResNet.forward unchanged. The CIFAR stem (3x3 stride-1 conv, no max-pool) is the usual
    variant for 32x32 inputs.
    """
    from torchvision.models.resnet import ResNet, BasicBlock as TVBasicBlock, conv3x3

    class NarrowResNet(ResNet):
        def __init__(self):
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes = widths[0]
            self.dilation = 1
            self.groups = 1
            self.base_width = 64
            if cifar_stem:
                self.conv1 = conv3x3(3, widths[0])
                self.maxpool = nn.Identity()
            else:
                self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
                self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.bn1 = nn.BatchNorm2d(widths[0])
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = self._make_layer(TVBasicBlock, widths[0], blocks[0])
            self.layer2 = self._make_layer(TVBasicBlock, widths[1], blocks[1], stride=2)
            self.layer3 = self._make_layer(TVBasicBlock, widths[2], blocks[2], stride=2)
            self.layer4 = self._make_layer(TVBasicBlock, widths[3], blocks[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(widths[3] * TVBasicBlock.expansion, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    return NarrowResNet()


class OpsZoo(nn.Module):
    """Ops the CNN/ResNet/MobileNet fixtures do not bring. Input (N,3,16,16).

    (x - 0.5) / 0.25                       Sub, Div by scalars
    a: dilated 3x3 conv (dilation 2)       -> LeakyReLU(0.1)
    b: ZeroPad2d((1,0,2,1)) + (4,2) conv   asymmetric padding, non-square kernel -> Sigmoid
    cat(a, b) on channels                  Concat
    BatchNorm2d(16) after the Concat       BatchNormalization (not foldable into a Conv)
    grouped 3x3 conv (groups 2)            -> Tanh
    y * sigmoid(AdaptiveAvgPool2d(1)(y))   GlobalAveragePool (legacy) / ReduceMean, broadcast Mul
    AvgPool2d(3,2,1) with count_include_pad True + the same with False   (added)
    MaxPool2d(3,2,1, ceil_mode=True)       8x8 -> 5x5
    permute(0,1,3,2)                       Transpose
    spatial mean  x.mean((2,3))            ReduceMean
    flatten(1) @ constant matrix           Flatten/Reshape, MatMul
    cat(mean, matmul) -> Linear(28, 10)
    """

    def __init__(self):
        super().__init__()
        self.dil = nn.Conv2d(3, 8, 3, padding=2, dilation=2)
        self.act_a = nn.LeakyReLU(0.1)
        self.pad = nn.ZeroPad2d((1, 0, 2, 1))          # left, right, top, bottom
        self.asym = nn.Conv2d(3, 8, (4, 2))
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.avg_incl = nn.AvgPool2d(3, 2, 1, count_include_pad=True)
        self.avg_excl = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.flatten = nn.Flatten()
        g = torch.Generator().manual_seed(7)
        self.register_buffer("proj", torch.randn(16 * 5 * 5, 12, generator=g) / 20.0)
        self.fc = nn.Linear(16 + 12, 10)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        a = self.act_a(self.dil(x))
        b = torch.sigmoid(self.asym(self.pad(x)))
        y = torch.tanh(self.grouped(self.bn(torch.cat([a, b], dim=1))))
        y = y * torch.sigmoid(self.gap(y))
        y = self.avg_incl(y) + self.avg_excl(y)
        y = self.maxpool(y)
        y = y.permute(0, 1, 3, 2)
        m = y.mean((2, 3))
        p = torch.matmul(self.flatten(y), self.proj)
        return self.fc(torch.cat([m, p], dim=1))


def randomise_bn(model, seed, shape, gain=(0.5, 1.5)):
    """Make every BatchNorm a non-identity affine map in eval mode (seeded).

    Running statistics come from a few seeded batches of uniform [0,1) inputs of `shape` (train-mode
    forward passes, cumulative average), so activations stay O(1) through deep nets (with made-up
    statistics the narrow MobileNets' logits and input gradients shrank to ~1e-3 and ~1e-7); then the
    affine parameters are drawn at random: weight uniform in [gain[0], gain[1]), bias normal(0, 0.1).
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None          # cumulative moving average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand((16,) + tuple(shape), generator=g))
        for m in bns:
            m.momentum = 0.1
            # A nearly constant channel (narrow nets have some) would get a huge gain 1/sqrt(var):
            # keep every variance at least a tenth of its layer's median (conditioning).
            m.running_var.clamp_(min=0.1 * float(m.running_var.median()))
            c = m.num_features
            m.weight.copy_(torch.rand(c, generator=g) * (gain[1] - gain[0]) + gain[0])
            m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def param_count(model):
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


# ---------------------------------------------------------------------------------------------
# Fixture specs
# ---------------------------------------------------------------------------------------------

def fixture_specs(args):
    """name -> dict(build, shape, exporter, dynamic, opset, description). build() returns an eval model."""
    import torchvision

    def tv_resnet():
        torch.manual_seed(11)
        return randomise_bn(make_torchvision_resnet(), 12, (3, 32, 32)).eval()

    def resnet_norm():
        torch.manual_seed(21)
        return randomise_bn(SmallResNetNorm(), 22, (3, 32, 32)).eval()

    def mnv3():
        torch.manual_seed(31)
        m = torchvision.models.mobilenet_v3_small(width_mult=0.15, num_classes=10)
        return randomise_bn(m, 32, (3, 32, 32)).eval()

    def mnv2():
        torch.manual_seed(41)
        m = torchvision.models.mobilenet_v2(width_mult=0.1, num_classes=10)
        # 17 random inverted-residual blocks sit near the edge of chaos: with BN weights in [0.5, 1.5)
        # the input gradient reached ~60 and float32 drifted 2e-5 from float64; [0.6, 1.2) keeps the
        # gradient O(1) and the float32 error ~5e-7.
        return randomise_bn(m, 42, (3, 32, 32), gain=(0.6, 1.2)).eval()

    def zoo():
        torch.manual_seed(51)
        return randomise_bn(OpsZoo(), 52, (3, 16, 16)).eval()

    cnn = lambda: load_cnn(args.weights)
    cnn_desc = ("reference Fashion-MNIST CNN (conv5x5x32-relu-maxpool2-conv5x5x64-relu-maxpool2-flatten-"
                "fc1024x128-relu-fc128x10) with the trained weights fmnist_cnn.safetensors")
    specs = {
        "cnn_dynamo": dict(build=cnn, shape=(1, 28, 28), exporter="dynamo", dynamic=True, opset=None,
                           description=cnn_desc + "; dynamic batch"),
        "cnn_legacy": dict(build=cnn, shape=(1, 28, 28), exporter="legacy", dynamic=True, opset=17,
                           description=cnn_desc + "; dynamic batch"),
        "cnn_batch1": dict(build=cnn, shape=(1, 28, 28), exporter="dynamo", dynamic=False, opset=None,
                           description=cnn_desc + "; fixed batch 1"),
        "resnet_bn_norm": dict(build=resnet_norm, shape=(3, 32, 32), exporter="dynamo", dynamic=True, opset=None,
                               description="small ResNet (stem conv3x3x8+BN, BasicBlocks 8->8, 8->16 stride 2 with "
                                           "1x1 conv+BN downsample, 16->16, BN after the last block's ReLU, global "
                                           "average pool, fc 16x10); forward "
                                           "starts with (x - mean) / std, [1,3,1,1] constants; eval mode, BN "
                                           "stats from random inputs and random BN affine"),
        "torchvision_resnet": dict(build=tv_resnet, shape=(3, 32, 32), exporter="dynamo", dynamic=True, opset=None,
                                   description="torchvision.models.resnet.ResNet subclass with torchvision BasicBlock "
                                               "x[1,1,1,1], widths 4,8,16,32 (resnet18's /16; ResNet fixes 64..512, so __init__ is "
                                               "re-run with narrow widths via ResNet._make_layer), CIFAR stem "
                                               "(conv3x3, no maxpool); eval mode, BN stats from random inputs and random BN affine"),
        "mobilenet_v3_small": dict(build=mnv3, shape=(3, 32, 32), exporter="dynamo", dynamic=True, opset=None,
                                   description="torchvision mobilenet_v3_small(width_mult=0.15, num_classes=10) on "
                                               "3x32x32; eval mode, BN stats from random inputs and random BN affine"),
        "mobilenet_v2_narrow": dict(build=mnv2, shape=(3, 32, 32), exporter="dynamo", dynamic=True, opset=None,
                                    description="torchvision mobilenet_v2(width_mult=0.1, num_classes=10) on "
                                                "3x32x32; eval mode, BN stats from random inputs and random BN affine"),
        "ops_zoo_dynamo": dict(build=zoo, shape=(3, 16, 16), exporter="dynamo", dynamic=True, opset=None,
                               description="synthetic ops coverage: " + " ".join(OpsZoo.__doc__.split())),
        "ops_zoo_legacy": dict(build=zoo, shape=(3, 16, 16), exporter="legacy", dynamic=True, opset=17,
                               description="synthetic ops coverage: " + " ".join(OpsZoo.__doc__.split())),
    }
    return specs


def full_specs():
    import torchvision

    def resnet18():
        torch.manual_seed(61)
        m = torchvision.models.resnet18(num_classes=10)
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)   # CIFAR stem
        m.maxpool = nn.Identity()
        return randomise_bn(m, 62, (3, 32, 32)).eval()

    def mnv3():
        torch.manual_seed(71)
        return randomise_bn(torchvision.models.mobilenet_v3_small(), 72, (3, 224, 224)).eval()

    def mnv2():
        torch.manual_seed(81)
        # BN gains as for the narrow fixture: 17 inverted-residual blocks with gains in [0.5, 1.5) blow the
        # input gradient up; [0.6, 1.2) keeps it O(1).
        return randomise_bn(torchvision.models.mobilenet_v2(num_classes=10), 82, (3, 32, 32), gain=(0.6, 1.2)).eval()

    return {
        "resnet18_cifar": dict(build=resnet18, shape=(3, 32, 32), exporter="dynamo", dynamic=True, opset=None,
                               description="torchvision resnet18(num_classes=10), CIFAR stem (conv3x3 stride 1, no "
                                           "maxpool); random weights, BN stats from random inputs and random BN affine, eval mode"),
        "mobilenet_v3_small_full": dict(build=mnv3, shape=(3, 224, 224), exporter="dynamo", dynamic=True, opset=None,
                                        description="torchvision mobilenet_v3_small() (width 1.0, 1000 classes) on "
                                                    "3x224x224; random weights, BN stats from random inputs and random BN affine, eval mode"),
        "mobilenet_v2_cifar": dict(build=mnv2, shape=(3, 32, 32), exporter="dynamo", dynamic=True, opset=None,
                                   description="torchvision mobilenet_v2(num_classes=10) (width 1.0) on 3x32x32 (issue #18's "
                                               "benchmark model); random weights, BN stats from random inputs and random BN "
                                               "affine in [0.6, 1.2), eval mode"),
    }


# ---------------------------------------------------------------------------------------------
# Export, reference outputs, report
# ---------------------------------------------------------------------------------------------

def export(model, example, path, exporter, dynamic, opset):
    if exporter == "dynamo":
        kwargs = {}
        if dynamic:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        if opset is not None:
            kwargs["opset_version"] = opset
        torch.onnx.export(model, (example,), path, dynamo=True, verbose=False, input_names=["input"], output_names=["logits"],
                          **kwargs)
    elif exporter == "legacy":
        kwargs = {}
        if dynamic:
            kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
        torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["logits"], do_constant_folding=True, **kwargs)
    else:
        raise ValueError(exporter)


def graph_ops(model_proto):
    """Op types (domain-qualified when not the default domain) in the graph, its subgraphs and functions."""
    import onnx
    ops = set()

    def walk(graph):
        for node in graph.node:
            ops.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        walk(g)

    walk(model_proto.graph)
    for fn in model_proto.functions:
        for node in fn.node:
            ops.add(f"fn:{node.op_type}")
    return ops


def value_info_str(vi):
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return f"{vi.name}[{','.join(dims)}]"


def ort_run(path, x):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x})[0]


def make_fixture(name, spec, out_dir, versions):
    import onnx
    from fixture_io import save_f32

    seed = sum(ord(c) * (i + 1) for i, c in enumerate(name)) % (2 ** 31)
    rng = np.random.default_rng(seed)
    model = spec["build"]()
    batch = BATCH if spec["dynamic"] else 1
    x = rng.random((batch,) + tuple(spec["shape"]), dtype=np.float64).astype(np.float32)

    onnx_path = os.path.join(out_dir, name + ".onnx")
    before = set(os.listdir(out_dir))
    for f in before:   # a re-run must not keep an old external-data file of this fixture
        if f.startswith(name + ".onnx") and f != name + ".onnx":
            os.remove(os.path.join(out_dir, f))
    before = set(os.listdir(out_dir))
    export(model, torch.from_numpy(x), onnx_path, spec["exporter"], spec["dynamic"], spec["opset"])
    written = sorted(set(os.listdir(out_dir)) - before | {name + ".onnx"})
    extra = [f for f in written if f != name + ".onnx"]

    proto = onnx.load(onnx_path, load_external_data=False)
    ext_locations = set()
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for kv in init.external_data:
                if kv.key == "location":
                    ext_locations.add(kv.value)
    onnx.checker.check_model(onnx_path)   # path form: also reads external data
    opset = {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}
    ops = graph_ops(proto)
    inputs = [value_info_str(v) for v in proto.graph.input]
    outputs = [value_info_str(v) for v in proto.graph.output]

    logits = ort_run(onnx_path, x).astype(np.float32)

    # PyTorch reference in float64: logits and d sum(logits * upstream) / d input.
    m64 = spec["build"]().double().eval()
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    t_logits = m64(xt)
    upstream = rng.standard_normal(tuple(t_logits.shape)).astype(np.float32)
    (t_logits * torch.from_numpy(upstream.astype(np.float64))).sum().backward()
    grad = xt.grad.numpy().astype(np.float32)
    t_logits = t_logits.detach().numpy()

    # The float32 model too, so the agreement of the exported graph with the module it came from is visible.
    with torch.no_grad():
        t32 = model(torch.from_numpy(x)).numpy()

    assert logits.shape == t_logits.shape, (logits.shape, t_logits.shape)
    diff64 = float(np.abs(logits.astype(np.float64) - t_logits).max())
    diff32 = float(np.abs(logits - t32).max())
    assert diff64 <= LOGITS_ATOL, f"{name}: |onnxruntime - torch| = {diff64:.3g} > {LOGITS_ATOL}"

    # Dynamic batch really dynamic: onnxruntime on batch 1 and 5 must equal torch too.
    dyn_check = ""
    if spec["dynamic"]:
        for b in (1, 5):
            xb = rng.random((b,) + tuple(spec["shape"]), dtype=np.float64).astype(np.float32)
            with torch.no_grad():
                ref = m64(torch.from_numpy(xb.astype(np.float64))).numpy()
            d = float(np.abs(ort_run(onnx_path, xb) - ref).max())
            assert d <= LOGITS_ATOL, f"{name}: batch {b}: |onnxruntime - torch| = {d:.3g}"
            dyn_check += f" b{b}:{d:.2e}"

    meta = {
        "description": spec["description"],
        "exporter": ("torch.onnx.export(dynamo=True) (default exporter)" if spec["exporter"] == "dynamo"
                     else f"torch.onnx.export(dynamo=False) (legacy TorchScript exporter), opset_version={spec['opset']}"),
        "opset": str(opset.get("ai.onnx")),
        "opset_import": ",".join(f"{k}:{v}" for k, v in sorted(opset.items())),
        "dynamic_batch": str(spec["dynamic"]),
        "input_layout": "NCHW",
        "grad_input_dtype": "float64 (PyTorch autograd on a float64 copy of the model), stored as float32",
        "torch_logits_dtype": "float64 forward, stored as float32",
        "logits_source": "onnxruntime CPUExecutionProvider, 1 intra-op thread",
        "max_abs_diff_ort_vs_torch": f"{diff64:.3e}",
        "ops": ",".join(sorted(ops)),
        "external_data": ",".join(sorted(ext_locations)) or "none",
        "graph_inputs": ";".join(inputs),
        "graph_outputs": ";".join(outputs),
        "seed": str(seed),
    }
    meta.update(versions)
    ref_path = os.path.join(out_dir, name + ".ref.safetensors")
    save_f32(ref_path, {"input": x, "logits": logits, "upstream": upstream, "grad_input": grad,
                        "torch_logits": t_logits.astype(np.float32)}, meta)

    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in written + [name + ".ref.safetensors"]}
    print(f"== {name}  ({spec['exporter']}, opset {opset.get('ai.onnx')}, params+buffers {param_count(model)})")
    print(f"   opset_import {opset}")
    print(f"   inputs {inputs}  outputs {outputs}")
    print(f"   ops ({len(ops)}) {sorted(ops)}")
    print(f"   external data: {sorted(ext_locations) or 'none'}  (files written: {written})")
    print(f"   max|ort - torch64| = {diff64:.3e}   max|ort - torch32| = {diff32:.3e}{dyn_check}")
    print("   sizes " + ", ".join(f"{f} {s}" for f, s in sizes.items()))
    sys.stdout.flush()
    return sum(sizes.values()), ops


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture folder (default Tests/Fixtures/onnx)")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help="fmnist_cnn.safetensors (the trained reference CNN)")
    ap.add_argument("--only", default="", help="comma-separated fixture names")
    ap.add_argument("--full", action="store_true",
                    help="export the full-size models (resnet18_cifar, mobilenet_v3_small_full, mobilenet_v2_cifar; "
                         "--only picks among them)")
    ap.add_argument("--out-full", default=None, help="folder for the --full models (not committed)")
    args = ap.parse_args()

    import warnings
    import logging
    warnings.filterwarnings("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    import onnx
    import onnxruntime
    import torchvision

    torch.manual_seed(0)
    torch.set_num_threads(2)
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__}
    try:
        import onnxscript
        versions["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    print("versions", versions)

    jobs = []
    specs = fixture_specs(args)
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in specs and not (args.full and s in full_specs()):
            sys.exit(f"unknown fixture {s}; known: {', '.join(specs)}")
    if not args.full or only:
        os.makedirs(args.out, exist_ok=True)
        jobs += [(n, s, args.out) for n, s in specs.items() if not only or n in only]
    if args.full:
        if not args.out_full:
            sys.exit("--full needs --out-full DIR")
        os.makedirs(args.out_full, exist_ok=True)
        jobs += [(n, s, args.out_full) for n, s in full_specs().items() if not only or n in only]

    total, all_ops = 0, set()
    for name, spec, out_dir in jobs:
        size, ops = make_fixture(name, spec, out_dir, versions)
        if out_dir == args.out:
            total += size
            all_ops |= ops
    if total:
        print(f"total size of the fixtures written to {args.out}: {total} bytes ({total / 2**20:.2f} MiB)")
        print(f"op types over all: {sorted(all_ops)}")


if __name__ == "__main__":
    main()
