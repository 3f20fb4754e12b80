#!/usr/bin/env python3
"""Cross-check of AdvKit's APGD-CE, APGD-DLR, APGD-T and AutoAttack against torchattacks 3.5.1.

Both sides attack the same model (the PyTorch-trained reference CNN, ../shared/peers/models/fmnist_cnn.safetensors)
on the same images (the first --n Fashion-MNIST test images), L-inf eps 0.1, 2 threads, seed 0, batches of 128,
and print robust accuracy and seconds per attack, then the table for docs/ATTACKS.md.

    PEERS=/work/peers scripts/crosscheck/autoattack.py            # both sides
    PEERS=/work/peers scripts/crosscheck/autoattack.py --only autoattack --repeat 3   # the speed criterion: 3 pairs
    scripts/crosscheck/autoattack.py --skip-torch                  # AdvKit only
    scripts/crosscheck/autoattack.py --skip-advkit                 # torchattacks only

Run it with any python3 (AdvKit's side needs no packages); torchattacks' side runs in the peers' venv
($PEERS/.venv/bin/python, with torch and torchattacks), which this script calls itself.

Settings. APGD (ce, dlr) and APGDT: the paper's 100 steps, 1 restart, rho 0.75, APGDT over n_classes - 1 = 9
target classes. torchattacks' AutoAttack("standard") is run as the library builds it: its components take the
library's defaults, which are 10 steps for APGD, APGDT and FAB (the paper and AdvKit use 100) and 5,000 queries
for Square; `--only autoattack-paper --skip-advkit` runs the same four attacks through torchattacks' MultiAttack
at 100 steps, like for like with AdvKit's. AdvKit's side is advkit-bench's workloads apgd-ce, apgd-dlr, apgd-t, autoattack (AutoAttack.standard:
100 steps each), timed once (--reps 1) over all images.
"""
import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA_DIR = "/usr/share/datasets/fashion-mnist"
PEERS = os.environ.get("PEERS", os.path.join(os.path.dirname(ROOT), "peers"))
WEIGHTS_DEFAULT = os.path.join(os.path.dirname(ROOT), "shared", "peers", "models", "fmnist_cnn.safetensors")
ATTACKS = ["apgd-ce", "apgd-dlr", "apgd-t", "autoattack"]
# torchattacks only (--skip-advkit): AutoAttack's four attacks at the paper's 100 steps, like AdvKit's standard.
TORCH_ONLY = ["autoattack-paper"]
# AdvKit only: AutoAttack.standard at the 10 steps torchattacks' AutoAttack gives APGD, APGD-T and FAB (Square 5,000
# queries): like for like with torchattacks' "autoattack".
ADVKIT_ONLY = ["autoattack-10"]
# The speed comparisons (issue #14's 3x), each (label, torchattacks' run, AdvKit's run): the libraries' defaults as
# users call them, then the same budget on both sides at 10 and at 100 steps.
PAIRS = [("defaults: torchattacks AutoAttack (10 steps) vs AdvKit AutoAttack (100 steps)", "autoattack", "autoattack"),
         ("same budget, 10 steps", "autoattack", "autoattack-10"),
         ("same budget, 100 steps (torchattacks through MultiAttack)", "autoattack-paper", "autoattack")]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=WEIGHTS_DEFAULT)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma list of " + ",".join(ATTACKS + TORCH_ONLY + ADVKIT_ONLY))
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-advkit", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run torchattacks then AdvKit this many times in turn; the table gives the medians and every "
                         "pair's AutoAttack ratio is printed (a shared machine drifts between runs)")
    ap.add_argument("--out", help="write both sides' figures here as JSON")
    ap.add_argument("--scratch-path", help="swift build --scratch-path for advkit-bench (default: SwiftPM's .build)")
    ap.add_argument("--torch-side", action="store_true", help=argparse.SUPPRESS)  # internal: run inside the venv
    return ap.parse_args()


# ----------------------------------------------------------------------------------------------
# torchattacks' side (runs inside the peers' venv)

def cpu_seconds():
    """User + system CPU seconds of this process, all threads (a shared machine stretches wall time; this less)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def read_idx(path):
    import numpy as np
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def torch_side(args, attacks):
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchattacks
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 5)
            self.conv2 = nn.Conv2d(32, 64, 5)
            self.fc1 = nn.Linear(1024, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    model = Net()
    model.load_state_dict(load_file(args.weights), strict=True)
    model.eval()
    images = read_idx(os.path.join(DATA_DIR, "t10k-images-idx3-ubyte.gz"))[: args.n]
    labels = read_idx(os.path.join(DATA_DIR, "t10k-labels-idx1-ubyte.gz"))[: args.n]
    X = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    Y = torch.from_numpy(labels.astype(np.int64))

    def predict(x):
        with torch.no_grad():
            return torch.cat([model(x[i:i + args.batch]) for i in range(0, len(x), args.batch)]).argmax(1)

    def make(name):
        eps, steps, seed = args.eps, args.steps, args.seed
        if name == "apgd-ce":
            return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce")
        if name == "apgd-dlr":
            return torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="dlr")
        if name == "apgd-t":
            return torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, n_classes=10)
        if name == "autoattack":
            return torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
        if name == "autoattack-paper":
            # Like for like with AdvKit's AutoAttack.standard: the same four attacks with the paper's 100 steps
            # (torchattacks' AutoAttack gives its components 10), through the library's MultiAttack.
            return torchattacks.MultiAttack([
                torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce"),
                torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, n_classes=10),
                torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, multi_targeted=True,
                                 n_classes=10),
                torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=seed),
            ])
        raise SystemExit(f"unknown attack {name}")

    out = {"clean_accuracy": float((predict(X) == Y).float().mean()), "versions": {
        "torch": torch.__version__, "torchattacks": torchattacks.__version__}, "attacks": {}}
    for name in [a for a in attacks if a not in ADVKIT_ONLY]:
        torch.manual_seed(args.seed)
        atk = make(name)
        t0, c0 = time.time(), cpu_seconds()
        adv = torch.cat([atk(X[i:i + args.batch], Y[i:i + args.batch]) for i in range(0, len(X), args.batch)]).detach()
        seconds, cpu = time.time() - t0, cpu_seconds() - c0
        linf = float((adv - X).abs().flatten(1).max(1)[0].max())
        rec = {"robust_accuracy": float((predict(adv) == Y).float().mean()), "seconds": round(seconds, 2),
               "cpu_seconds": round(cpu, 2), "linf_max": linf, "in_bounds": bool(adv.min() >= 0 and adv.max() <= 1)}
        out["attacks"][name] = rec
        print(f"torchattacks {name:10s} robust {rec['robust_accuracy'] * 100:6.2f}%  {seconds:7.1f} s  cpu {cpu:7.1f} s  "
              f"(max Linf {linf:.4f})", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------------------------
# AdvKit's side (advkit-bench)

def build_advkit(args):
    """Builds advkit-bench once (every repeat then runs the same binary); returns its folder."""
    scratch = ["--scratch-path", args.scratch_path] if args.scratch_path else []
    subprocess.run(["swift", "build", "-c", "release", "--product", "advkit-bench"] + scratch, cwd=ROOT, check=True,
                   stdout=sys.stderr)
    return subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"] + scratch, cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def advkit_side(args, attacks, binpath):
    out = {"attacks": {}}
    for name in [a for a in attacks if a not in TORCH_ONLY]:
        cmd = [os.path.join(binpath, "advkit-bench"), "--threads", str(args.threads), "--batch", str(args.batch),
               "--n", str(args.n), "--reps", "1", "--min-rep-s", "0", "--weights", args.weights, "--only", name]
        res = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        w = json.loads(res.stdout)["workloads"][name + "/advkit"]
        rec = {"robust_accuracy": w["robust_accuracy"], "seconds": w["median_s"],
               "cpu_seconds": round(w["cpu_user_s_median"] + w["cpu_sys_s_median"], 2), "linf_max": w["linf_max"],
               "in_bounds": w["in_bounds_0_1"], "command": " ".join(cmd[1:])}
        for k in ("robust_accuracy_after", "broken_by", "components", "component_seconds"):
            if k in w:
                rec[k] = w[k]
        out["clean_accuracy"] = w["clean_accuracy_same_images"]
        out["attacks"][name] = rec
        print(f"advkit       {name:10s} robust {rec['robust_accuracy'] * 100:6.2f}%  {rec['seconds']:7.1f} s  "
              f"cpu {rec['cpu_seconds']:7.1f} s  "
              f"(max Linf {rec['linf_max']:.4f})", file=sys.stderr, flush=True)
    return out


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def torch_run(args, attacks):
    python = os.path.join(PEERS, ".venv", "bin", "python")
    if not os.path.exists(python):
        raise SystemExit(f"{python} is missing: set PEERS to a copy of ../shared/peers whose setup.sh has run")
    cmd = [python, os.path.abspath(__file__), "--torch-side", "--weights", args.weights, "--n", str(args.n),
           "--eps", str(args.eps), "--steps", str(args.steps), "--threads", str(args.threads),
           "--batch", str(args.batch), "--seed", str(args.seed), "--only", ",".join(attacks)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    return json.loads(subprocess.run(cmd, check=True, capture_output=False, stdout=subprocess.PIPE,
                                     text=True, env=env).stdout)


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def merge(runs):
    """One side's runs as one record per attack: median wall and CPU seconds, every run's figures kept."""
    if not runs:
        return None
    out = dict(runs[-1])
    out["attacks"] = {}
    for name in runs[-1]["attacks"]:
        recs = [r["attacks"][name] for r in runs]
        rec = dict(recs[-1])
        rec["seconds"] = median([r["seconds"] for r in recs])
        rec["cpu_seconds"] = median([r["cpu_seconds"] for r in recs])
        rec["runs"] = [{k: r[k] for k in ("seconds", "cpu_seconds", "robust_accuracy", "load_average") if k in r}
                       for r in recs]
        out["attacks"][name] = rec
    return out


def main():
    args = parse_args()
    attacks = args.only.split(",") if args.only else ATTACKS
    if args.torch_side:
        print(json.dumps(torch_side(args, attacks)))
        return
    torch_runs, advkit_runs, pairs = [], [], []
    binpath = None if args.skip_advkit else build_advkit(args)
    for rep in range(max(args.repeat, 1)):
        t = a = None
        if not args.skip_torch:
            load = load_average()
            t = torch_run(args, attacks)
            for rec in t["attacks"].values():
                rec["load_average"] = load
            torch_runs.append(t)
        if not args.skip_advkit:
            load = load_average()
            a = advkit_side(args, attacks, binpath)
            for rec in a["attacks"].values():
                rec["load_average"] = load
            advkit_runs.append(a)
        for label, tname, aname in PAIRS:
            if not (t and a and tname in t["attacks"] and aname in a["attacks"]):
                continue
            ta, aa = t["attacks"][tname], a["attacks"][aname]
            pair = {"comparison": label, "torchattacks": tname, "advkit": aname, "torchattacks_s": ta["seconds"],
                    "torchattacks_cpu_s": ta["cpu_seconds"], "advkit_s": aa["seconds"], "advkit_cpu_s": aa["cpu_seconds"],
                    "torchattacks_robust": ta["robust_accuracy"], "advkit_robust": aa["robust_accuracy"],
                    "wall_ratio": ta["seconds"] / max(aa["seconds"], 1e-9),
                    "cpu_ratio": ta["cpu_seconds"] / max(aa["cpu_seconds"], 1e-9),
                    "load_average": [ta["load_average"], aa["load_average"]], "run": rep + 1}
            pairs.append(pair)
            print(f"run {rep + 1}, {label}: torchattacks {pair['torchattacks_s']:.1f} s (CPU {pair['torchattacks_cpu_s']:.1f} s), "
                  f"AdvKit {pair['advkit_s']:.1f} s (CPU {pair['advkit_cpu_s']:.1f} s): {pair['wall_ratio']:.2f}x wall, "
                  f"{pair['cpu_ratio']:.2f}x CPU (load average {pair['load_average'][0]:.1f} / {pair['load_average'][1]:.1f})",
                  file=sys.stderr, flush=True)
    torch_res, advkit_res = merge(torch_runs), merge(advkit_runs)
    clean = (advkit_res or torch_res)["clean_accuracy"]
    print(f"\nFirst {args.n} Fashion-MNIST test images, L-inf eps {args.eps}, {args.threads} threads, seed {args.seed}; "
          f"clean accuracy {clean * 100:.2f}%" + (f"; seconds are medians of {args.repeat} runs" if args.repeat > 1 else "") + "\n")
    print("| attack | AdvKit robust acc | AdvKit s (CPU s) | torchattacks robust acc | torchattacks s (CPU s) |")
    print("|---|---|---|---|---|")
    for name in attacks:
        a = advkit_res["attacks"].get(name) if advkit_res else None
        t = torch_res["attacks"].get(name) if torch_res else None
        cell = lambda r: (f"{r['robust_accuracy'] * 100:.2f}%", f"{r['seconds']:.1f} ({r['cpu_seconds']:.1f})") if r else ("-", "-")
        print(f"| {name} | {' | '.join(cell(a))} | {' | '.join(cell(t))} |")
    if advkit_res and "autoattack" in advkit_res["attacks"]:
        a = advkit_res["attacks"]["autoattack"]
        if "component_seconds" in a:
            parts = ", ".join(f"{n} {s:.1f} s" for n, s in zip(a.get("components", []), a["component_seconds"]))
            print(f"\nAdvKit AutoAttack per component (last run): {parts}")
    for label, _, _ in PAIRS:
        mine = [p for p in pairs if p["comparison"] == label]
        if not mine:
            continue
        print(f"\nAutoAttack, {label}:")
        for p in mine:
            print(f"  run {p['run']}: torchattacks {p['torchattacks_s']:.1f} s ({p['torchattacks_cpu_s']:.1f} CPU s, robust "
                  f"{p['torchattacks_robust'] * 100:.2f}%), AdvKit {p['advkit_s']:.1f} s ({p['advkit_cpu_s']:.1f} CPU s, robust "
                  f"{p['advkit_robust'] * 100:.2f}%): AdvKit {p['wall_ratio']:.2f}x the speed (wall), {p['cpu_ratio']:.2f}x (CPU seconds)")
        if len(mine) > 1:
            print(f"  median of {len(mine)} runs: {median([p['wall_ratio'] for p in mine]):.2f}x (wall), "
                  f"{median([p['cpu_ratio'] for p in mine]):.2f}x (CPU seconds)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"advkit": advkit_res, "torchattacks": torch_res, "pairs": pairs, "n": args.n, "eps": args.eps,
                       "threads": args.threads, "seed": args.seed}, f, indent=1)


if __name__ == "__main__":
    main()
