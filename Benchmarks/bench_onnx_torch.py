#!/usr/bin/env python3
"""PyTorch on the models advkit-bench's onnx-* workloads import, timed the way advkit-bench times AdvKit.

Each model is PyTorch's own module, built the way its ONNX file was exported, with the same weights:

  onnx-cnn-*          make_fixtures.FmnistCNN (the reference CNN; bench_torch.py's Net) with its weights read
                      from the ONNX file's initializers (conv1.weight ... fc2.bias, strict load).
  onnx-resnet18-*     make_fixtures.full_specs()'s seeded builders, the modules the exports were made from
  onnx-mobilenetv2-*  (torchvision resnet18 with the CIFAR stem, mobilenet_v2(num_classes=10); BatchNorm as separate
                      modules in eval mode, as a PyTorch user runs them: the exporter folded it into the convolutions).
                      The weights are checked, not assumed: onnxruntime on the ONNX file and the module must give the
                      same logits on the benchmark's first batch (max |diff| <= 1e-4 of the largest logit), or the
                      script stops.

Workloads (keys as advkit-bench's, suffix /torch), 2 threads by default, batch 128:
  onnx-cnn-forward, onnx-cnn-grad, onnx-cnn-pgd40 on the first --n (1024) Fashion-MNIST test images
      (PGD-40: eps 0.1, alpha 0.01, random start, as bench_torch.py's pgd40/torch);
  onnx-resnet18-grad, onnx-resnet18-pgd10 on the first --resnet18-n (128) images,
  onnx-mobilenetv2-grad, onnx-mobilenetv2-pgd10 on the first --mobilenetv2-n (512): Fashion-MNIST test images
      zero-padded to 32x32 and repeated over 3 channels (ONNXBench.swift's cifarSized); PGD-10 L-inf eps 8/255,
      alpha 2/255, no random start; input gradient = d mean CE / d x.

Timing as bench_torch.py: one warm-up batch, a calibration pass that sets how many passes make a repetition last
--min-rep-s, --reps repetitions, the median. The full-size models (one pass takes seconds) skip the calibration, warm
up with one input gradient of 16 images, and repeat --full-reps times, as advkit-bench does.

--advkit-adv DIR: AdvKit's adversarial images (advkit-bench --onnx-adv-out DIR) are compared with PyTorch's for
the deterministic PGD-10 workloads: max |difference|, and how many pixels and images differ.

    PEERS=/work/peers; $PEERS/.venv/bin/python Benchmarks/bench_onnx_torch.py --threads 2 --out torch_onnx.json
    Benchmarks/onnx_compare.sh     # advkit-bench, then this, then the ratio table
"""
import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts", "onnx"))

DATA_DIR = "/usr/share/datasets/fashion-mnist"
WORKLOADS = ["onnx-cnn-forward", "onnx-cnn-grad", "onnx-cnn-pgd40", "onnx-resnet18-grad", "onnx-resnet18-pgd10",
             "onnx-mobilenetv2-grad", "onnx-mobilenetv2-pgd10"]
# The module must reproduce onnxruntime's logits on the ONNX file this closely (float32 through 20-50 layers,
# relative to the largest logit).
SAME_WEIGHTS_RTOL = 1e-4


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--min-rep-s", type=float, default=0.5)
    ap.add_argument("--n", type=int, default=1024, help="Fashion-MNIST test images for the CNN workloads")
    ap.add_argument("--cnn", default=os.path.join(REPO, "Tests", "Fixtures", "onnx", "cnn_dynamo.onnx"))
    ap.add_argument("--resnet18", default=os.path.join(REPO, "..", "onnx-full", "resnet18_cifar.onnx"))
    ap.add_argument("--mobilenetv2", default=os.path.join(REPO, "..", "onnx-full", "mobilenet_v2_cifar.onnx"))
    ap.add_argument("--resnet18-n", type=int, default=128)
    ap.add_argument("--mobilenetv2-n", type=int, default=512)
    ap.add_argument("--full-reps", type=int, help="repetitions of the resnet18/mobilenetv2 workloads (default --reps)")
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--only", help="comma list of workloads (default all); 'onnx-resnet18' picks both of its")
    ap.add_argument("--advkit-adv", help="folder of advkit-bench --onnx-adv-out files to compare with")
    ap.add_argument("--out", help="also write the JSON here")
    return ap.parse_args()


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = struct.unpack(">I", raw[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    import numpy as np
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_test(data_dir, n):
    import numpy as np
    import torch
    x = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))[:n].astype(np.float32) / np.float32(255.0)
    y = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"))[:n].astype(np.int64)
    return torch.from_numpy(x.reshape(-1, 1, 28, 28)).contiguous(), torch.from_numpy(y)


def cifar_sized(x):
    """(N,1,28,28) -> (N,3,32,32): zero-padded by 2 on every side, the channel repeated (ONNXBench.cifarSized)."""
    import torch.nn.functional as F
    return F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1).contiguous()


def onnx_initializers(path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)   # external data beside it
    return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


def ort_logits(path, x, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def check_same_function(name, model, path, x, threads):
    """onnxruntime on the file vs the module, on x: the module is the exported one, weights included."""
    import numpy as np
    import torch
    with torch.no_grad():
        ours = model(x).numpy()
    ref = ort_logits(path, x, threads)
    err = float(np.abs(ours - ref).max() / max(1.0, float(np.abs(ref).max())))
    if err > SAME_WEIGHTS_RTOL:
        sys.exit(f"{name}: the PyTorch module and onnxruntime on {path} differ by {err:.3g} (relative): "
                 "not the exported weights (re-export with scripts/onnx/make_fixtures.py --full)")
    return err


def build(name, path, threads, x_check):
    import torch
    import make_fixtures as mf
    if name == "cnn":
        model = mf.FmnistCNN()
        inits = onnx_initializers(path)
        sd = {k: torch.from_numpy(inits[k].copy()) for k in model.state_dict()}
        model.load_state_dict(sd, strict=True)
        how = "make_fixtures.FmnistCNN, weights = the ONNX file's initializers"
    else:
        stem = os.path.splitext(os.path.basename(path))[0]
        specs = mf.full_specs()
        if stem not in specs:
            sys.exit(f"{path}: no builder for '{stem}' in make_fixtures.full_specs() ({', '.join(specs)})")
        model = specs[stem]["build"]()
        how = f"make_fixtures.full_specs()['{stem}'] (the seeded module the export was made from), BN unfolded, eval"
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    err = check_same_function(name, model, path, x_check, threads)
    return model, {"model": path, "module": how, "max_rel_diff_vs_onnxruntime_first_batch": err}


def input_grad(torch, F, model, x, y):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return g


def pgd(torch, F, model, x, y, eps, alpha, steps, random_start):
    """bench_torch.py's plain PGD: x + alpha*sign(grad), projected onto the eps-ball, clipped to [0,1]."""
    xa = x.clone()
    if random_start:
        xa = (xa + torch.empty_like(xa).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        g = input_grad(torch, F, model, xa, y)
        xa = xa + alpha * g.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1).detach()
    return xa


def timed(name, run_all, warmup, n_images, reps, min_rep_s):
    import resource
    import torch
    torch.manual_seed(0)
    warmup()
    passes = 1
    if min_rep_s > 0:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        run_all()
        t1 = time.perf_counter() - t0
        if t1 < min_rep_s:
            passes = max(1, int(min_rep_s / max(t1, 1e-6) + 0.999))
    times, user = [], []
    out = None
    for _ in range(reps):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for _ in range(passes):
            torch.manual_seed(0)
            out = run_all()
        times.append(time.perf_counter() - t0)
        user.append(resource.getrusage(resource.RUSAGE_SELF).ru_utime - r0.ru_utime)
    med = statistics.median(times)
    rec = {"images": n_images, "passes_per_rep": passes, "reps": reps, "times_s": [round(t, 4) for t in times],
           "median_s": round(med, 4), "seconds_per_pass": round(med / passes, 4),
           "images_per_s": round(n_images * passes / med, 2), "cpu_user_s_median": round(statistics.median(user), 4)}
    print(f"[{name}] {rec['images_per_s']:.1f} img/s  (median {med:.3f}s of {reps} x {passes} pass(es), {n_images} images)",
          file=sys.stderr, flush=True)
    return rec, out


def compare_adv(key, adv, x, y, folder):
    """AdvKit's adversarial images for `key` against PyTorch's `adv` on the same images."""
    path = os.path.join(folder, key + ".advkit.safetensors")
    if not os.path.exists(path):
        return {"vs_advkit": f"{path} is missing"}
    from safetensors.numpy import load_file
    import numpy as np
    theirs = load_file(path)
    if theirs["images"].shape != tuple(x.shape) or float(np.abs(theirs["images"] - x.numpy()).max()) != 0.0:
        return {"vs_advkit": "AdvKit attacked other images (shape or values differ)"}
    if not np.array_equal(theirs["labels"].astype(np.int64), y.numpy()):
        return {"vs_advkit": "AdvKit used other labels"}
    d = np.abs(theirs["adversarial"] - adv.numpy())
    per_image = d.reshape(d.shape[0], -1).max(axis=1)
    return {"vs_advkit": {
        "max_abs_diff": float(d.max()),
        "pixels_differing_gt_1e-6": int((d > 1e-6).sum()), "pixels": int(d.size),
        "images_differing_gt_1e-6": int((per_image > 1e-6).sum()), "images_compared": int(d.shape[0]),
        "mean_abs_diff": float(d.mean()),
    }}


def main():
    args = parse_args()
    import numpy as np
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    only = [s for s in (args.only or "").split(",") if s]

    def want(k):
        return not only or any(k == s or k == s.removesuffix("/torch") or k.startswith(s + "-") or s == "onnx" for s in only)

    t_start = time.time()
    B = args.batch
    W = {}
    models = {}
    n_all = max(args.n, args.resnet18_n, args.mobilenetv2_n)
    X_all, Y_all = fashion_mnist_test(args.data_dir, n_all)

    def batched(fn, X, Y):
        return torch.cat([fn(X[i:i + B], Y[i:i + B]) for i in range(0, len(X), B)])

    # The reference CNN.
    if any(want(k) for k in WORKLOADS[:3]):
        X, Y = X_all[:args.n], Y_all[:args.n]
        model, info = build("cnn", args.cnn, args.threads, X[:B])
        models["cnn"] = info
        if want("onnx-cnn-forward"):
            def fwd():
                with torch.no_grad():
                    return torch.cat([model(X[i:i + B]) for i in range(0, len(X), B)])
            W["onnx-cnn-forward/torch"], _ = timed("onnx-cnn-forward/torch", fwd, lambda: model(X[:B]), len(X),
                                                   args.reps, args.min_rep_s)
        if want("onnx-cnn-grad"):
            W["onnx-cnn-grad/torch"], _ = timed("onnx-cnn-grad/torch",
                                                lambda: batched(lambda a, b: input_grad(torch, F, model, a, b), X, Y),
                                                lambda: input_grad(torch, F, model, X[:B], Y[:B]), len(X), args.reps,
                                                args.min_rep_s)
        if want("onnx-cnn-pgd40"):
            rec, adv = timed("onnx-cnn-pgd40/torch",
                             lambda: batched(lambda a, b: pgd(torch, F, model, a, b, 0.1, 0.01, 40, True), X, Y),
                             lambda: pgd(torch, F, model, X[:B], Y[:B], 0.1, 0.01, 2, True), len(X), args.reps,
                             args.min_rep_s)
            with torch.no_grad():
                rec["robust_accuracy"] = float((torch.cat([model(adv[i:i + B]) for i in range(0, len(X), B)]).argmax(1) == Y)
                                               .float().mean())
            rec["params"] = "PGD Linf eps=0.1 alpha=0.01 steps=40 random start (torch RNG: images not comparable with AdvKit's)"
            W["onnx-cnn-pgd40/torch"] = rec

    # Full-size models at 3x32x32: one pass takes seconds, so no calibration pass (min_rep_s 0).
    for key, path, n in [("resnet18", args.resnet18, args.resnet18_n), ("mobilenetv2", args.mobilenetv2, args.mobilenetv2_n)]:
        gk, pk = f"onnx-{key}-grad", f"onnx-{key}-pgd10"
        if not (want(gk) or want(pk)):
            continue
        if not os.path.exists(path):
            print(f"bench_onnx_torch: {path} is missing: {gk}, {pk} skipped", file=sys.stderr)
            continue
        X, Y = cifar_sized(X_all[:n]), Y_all[:n]
        model, info = build(key, path, args.threads, X[:B])
        full_reps = args.full_reps or args.reps
        warm = lambda: input_grad(torch, F, model, X[:16], Y[:16])
        models[key] = info
        if want(gk):
            W[gk + "/torch"], _ = timed(gk + "/torch", lambda: batched(lambda a, b: input_grad(torch, F, model, a, b), X, Y),
                                        warm, n, full_reps, 0)
        if want(pk):
            eps, alpha = 8 / 255, 2 / 255
            rec, adv = timed(pk + "/torch",
                             lambda: batched(lambda a, b: pgd(torch, F, model, a, b, eps, alpha, 10, False), X, Y),
                             warm, n, full_reps, 0)
            rec["params"] = "PGD Linf eps=8/255 alpha=2/255 steps=10, no random start"
            with torch.no_grad():
                pred = torch.cat([model(adv[i:i + B]) for i in range(0, n, B)]).argmax(1)
                clean = torch.cat([model(X[i:i + B]) for i in range(0, n, B)]).argmax(1)
            rec["clean_accuracy"] = float((clean == Y).float().mean())
            rec["robust_accuracy"] = float((pred == Y).float().mean())
            if args.advkit_adv:
                rec.update(compare_adv(pk, adv, X, Y, args.advkit_adv))
            W[pk + "/torch"] = rec

    import torchvision
    res = {
        "tool": "bench_onnx_torch.py", "threads": args.threads, "batch": B, "reps": args.reps,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__},
        "torch_config_blas": [l.strip() for l in torch.__config__.show().splitlines() if "BLAS" in l][:2],
        "env": {k: os.environ.get(k, "(unset)") for k in ["OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "GLIBC_TUNABLES"]},
        "models": models, "workloads": W, "wall_seconds": round(time.time() - t_start, 1),
    }
    out = json.dumps(res, indent=1)
    print(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(out + "\n")


if __name__ == "__main__":
    main()
