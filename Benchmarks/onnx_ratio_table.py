"""Ratio table of advkit-bench's onnx-* workloads against bench_onnx_torch.py's:
python3 onnx_ratio_table.py torch_onnx.json advkit_onnx.json

Seconds are one pass over the workload's images (median); ratio = PyTorch s / AdvKit s (above 1: AdvKit faster).
CPU s: user CPU seconds of one pass (both sides record it); on a shared machine the wall ratio moves with the
load and the CPU ratio much less, so both are printed.
The CNN rows also give the built-in Model(.cnn) timed in alternating repetitions with the import."""
import json
import sys

torch = json.load(open(sys.argv[1]))
ours = json.load(open(sys.argv[2]))
tw, ow = torch["workloads"], ours["workloads"]
keys = ["onnx-cnn-forward", "onnx-cnn-grad", "onnx-cnn-pgd40", "onnx-resnet18-grad", "onnx-resnet18-pgd10",
        "onnx-mobilenetv2-grad", "onnx-mobilenetv2-pgd10"]


def per_pass(rec):
    return rec["images"] / rec["images_per_s"]


env = ours.get("env", {})
print(f"threads {ours['threads']}, batch {ours['batch']}, reps {ours['reps']}; OpenBLAS core {ours.get('blas_corename')}, "
      f"OPENBLAS_CORETYPE {env.get('OPENBLAS_CORETYPE')}; torch {torch['versions'].get('torch')}")
print()
print("| workload | images | AdvKit s | PyTorch s | ratio | AdvKit CPU s | PyTorch CPU s | ratio (CPU) | built-in Model(.cnn) s | import / built-in (wall, CPU) | max abs diff of adversarial images |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k in keys:
    a, t = ow.get(k + "/advkit"), tw.get(k + "/torch")
    if not a and not t:
        continue
    sa = f"{per_pass(a):.3f}" if a else "-"
    st = f"{per_pass(t):.3f}" if t else "-"
    ratio = f"{per_pass(t) / per_pass(a):.2f}x" if a and t else "-"
    def cpu(rec):
        return rec["cpu_user_s_median"] / rec["passes_per_rep"] if rec and "cpu_user_s_median" in rec else None
    ca, ct = cpu(a), cpu(t)
    sca = f"{ca:.3f}" if ca is not None else "-"
    sct = f"{ct:.3f}" if ct is not None else "-"
    rcpu = f"{ct / ca:.2f}x" if ca and ct else "-"
    bi = f"{a['builtin_median_s'] / a['passes_per_rep']:.3f}" if a and "builtin_median_s" in a else "-"
    rel = (f"{a['onnx_over_builtin_time']:.3f}, {a['onnx_over_builtin_cpu']:.3f}"
           if a and "onnx_over_builtin_cpu" in a else "-")
    diff = "-"
    v = (t or {}).get("vs_advkit")
    if isinstance(v, dict):
        diff = (f"{v['max_abs_diff']:.3g} ({v['pixels_differing_gt_1e-6']} of {v['pixels']} pixels, "
                f"{v['images_differing_gt_1e-6']} of {v['images_compared']} images)")
    elif isinstance(v, str):
        diff = v
    elif a and "max_abs_diff_vs_builtin" in a and k == "onnx-cnn-pgd40":
        diff = f"vs built-in: {a['max_abs_diff_vs_builtin']:.3g}"
    n = (a or t)["images"]
    print(f"| {k} | {n} | {sa} | {st} | {ratio} | {sca} | {sct} | {rcpu} | {bi} | {rel} | {diff} |")
