"""Ratio table of advkit-bench against bench_torch.py: python3 ratio_table.py torch.json advkit.json"""
import json
import sys

torch = json.load(open(sys.argv[1]))
ours = json.load(open(sys.argv[2]))
tw, ow = torch["workloads"], ours["workloads"]
# Our workload -> the best Python library's workload for the same job.
pairs = [
    ("forward", ["forward/torch"]),
    ("input_grad", ["input_grad/torch"]),
    ("fgsm", ["fgsm/torch", "fgsm/torchattacks", "fgsm/art", "fgsm/foolbox"]),
    ("pgd40", ["pgd40/torch", "pgd40/torchattacks", "pgd40/art", "pgd40/foolbox"]),
    ("pgd40_norandom", ["pgd40_norandom/torch"]),
    ("deepfool", ["deepfool/foolbox", "deepfool/torchattacks"]),
    ("cw", ["cw/torchattacks"]),
    ("train_std", ["train_std/torch"]),
    ("train_pgd7", ["train_pgd7/torch"]),
]
env = ours.get("env", {})
print(f"threads {ours['threads']}, batch {ours['batch']}; OpenBLAS core {ours.get('blas_corename')}, "
      f"OPENBLAS_CORETYPE {env.get('OPENBLAS_CORETYPE')}; torch {torch['versions'].get('torch')}")
print()
print("| workload | AdvKit img/s | best Python peer | peer img/s | ratio | AdvKit robust acc | peer robust acc |")
print("|---|---|---|---|---|---|---|")
for key, peers in pairs:
    mine = ow.get(key + "/advkit")
    have = [(p, tw[p]) for p in peers if p in tw and "images_per_s" in tw[p]]
    if not mine or not have:
        continue
    name, best = max(have, key=lambda kv: kv[1]["images_per_s"])
    ra = mine.get("robust_accuracy")
    rb = best.get("robust_accuracy")
    fmt = lambda x: "-" if x is None else f"{100 * x:.2f}%"
    print(f"| {key} | {mine['images_per_s']:.1f} | {name} | {best['images_per_s']:.1f} | "
          f"{mine['images_per_s'] / best['images_per_s']:.2f}x | {fmt(ra)} | {fmt(rb)} |")
