"""Scaling curves: time vs batch size and vs image size, memory vs number of perturbations.

* time and peak extra memory vs ``batch_size`` (16 .. 1024) for occlusion (16 inputs), PDA
  (1 input, 32 values) and IG (64 inputs, 64 steps) on the MNIST CNN;
* time vs image size (28, 32, 64, 128, 227) for occlusion (window 1), PDA (16 values) and IG
  (64 steps) on study 1's center-pixel model built at that size (1 input), with each floor;
* peak resident memory (``ru_maxrss`` of a fresh process per point, and of a process that only
  builds the model and runs one forward pass) as the number of perturbations grows: RISE masks,
  PDA values, Shapley permutations on the MNIST CNN (1 input): the methods hold one chunk of
  perturbations at a time, so the curve should stay flat.

``python -m bench.scaling`` writes ``bench/scaling.png`` and ``bench/scaling.json``.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

BATCH_SIZES = (16, 64, 256, 1024)
IMAGE_SIZES = (28, 32, 64, 128, 227)
SWEEP = {  # method: (inputs, settings) for the batch-size sweep
    "occlusion": (16, {}), "pda": (1, {"values": 32}), "ig": (64, {"steps": 64})}
SIZE_SETTINGS = {"occlusion": {}, "pda": {"values": 16}, "ig": {"steps": 64}}
MEMORY = {"rise": ("masks", (1000, 4000, 16000, 64000)), "pda": ("values", (4, 16, 64, 256)),
          "shapley": ("samples", (1, 4, 16, 64))}


def _mnist(n):
    from . import cases as C

    case = C.build_case("mnist_cnn")
    return case.model, case.x[:n], case.targets[:n]


def batch_sweep(repeats=3):
    from xaitf import registry

    from .harness import measure

    out = {}
    model, x, t = _mnist(64)
    for m, (n, kw) in SWEEP.items():
        out[m] = []
        for bs in BATCH_SIZES:
            ex = registry.create_explainer(m, model, batch_size=bs, progress=False, **kw)
            _, st = measure(lambda: ex(x[:n], t[:n]), repeats)
            out[m].append({"batch_size": bs, "time_s": st["time_s"], "mem_mb": st["mem_mb"], "n": n})
            print(f"  scaling batch_size {m} bs={bs}: {st['time_s']:.3f} s, {st['mem_mb']} MB", flush=True)
    return out


def size_sweep(repeats=3):
    from xaitf import registry
    from xaitf.zoo import build_center_pixel

    from . import costs
    from .harness import Floor, measure

    out = {m: [] for m in SIZE_SETTINGS}
    rng = np.random.default_rng(0)
    for s in IMAGE_SIZES:
        model = build_center_pixel(image_size=s)
        x = rng.random((1, s, s, 1), dtype=np.float32)
        t = np.asarray(model(x)).argmax(1)
        floor = Floor(model, x, t, 256)
        for m, kw in SIZE_SETTINGS.items():
            ex = registry.create_explainer(m, model, progress=False, **kw)
            evals, backward, _ = costs.cost(m, ex)
            _, st = measure(lambda: ex(x, t), repeats)
            fl = floor.time(evals, backward, repeats)
            out[m].append({"size": s, "time_s": st["time_s"], "floor_s": fl["time_s"], "evals": evals,
                           "floor_extrapolated": fl["extrapolated"]})
            print(f"  scaling size {m} {s}: {st['time_s']:.3f} s, floor {fl['time_s']:.3f} s", flush=True)
    return out


def memory_point(method, key, value):
    """In a fresh process: ru_maxrss (MB) after building the model and running ``method`` once."""
    import resource

    from xaitf import registry

    model, x, t = _mnist(1)
    model(x)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if method != "none":
        ex = registry.create_explainer(method, model, progress=False, **{key: value})
        ex(x, t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"method": method, key: value, "maxrss_mb": peak, "before_mb": base}


def _spawn(method, key="none", value=0):
    cmd = [sys.executable, "-m", "bench.scaling", "--memory-point", method, key, str(value)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, timeout=900)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"memory point {method} {key}={value} failed: {res.stderr[-400:]}")
    return json.loads(lines[-1])


def memory_sweep():
    out = {"baseline": _spawn("none")}
    for m, (key, values) in MEMORY.items():
        out[m] = []
        for v in values:
            p = _spawn(m, key, v)
            out[m].append(p)
            print(f"  scaling memory {m} {key}={v}: maxrss {p['maxrss_mb']:.0f} MB", flush=True)
    return out


def figure(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8.5))
    fig.suptitle("xaitf scaling (2-core CPU, shared; bench/scaling.py)", fontsize=12)
    colors = {"occlusion": "C0", "pda": "C1", "ig": "C2", "rise": "C3", "shapley": "C4"}
    a = ax[0, 0]
    for m, pts in data["batch"].items():
        a.plot([p["batch_size"] for p in pts], [p["time_s"] for p in pts], "o-", color=colors[m],
               label=f"{m} (N={pts[0]['n']})")
    a.set(xscale="log", yscale="log", xlabel="batch_size (model evaluations per chunk)", ylabel="time (s)",
          title="MNIST CNN: time vs batch_size")
    a.legend()
    a = ax[0, 1]
    for m, pts in data["batch"].items():
        a.plot([p["batch_size"] for p in pts], [p["mem_mb"] or 0 for p in pts], "o-", color=colors[m], label=m)
    a.set(xscale="log", xlabel="batch_size", ylabel="peak extra RSS during a call (MB)",
          title="MNIST CNN: memory vs batch_size")
    a.legend()
    a = ax[1, 0]
    for m, pts in data["size"].items():
        a.plot([p["size"] for p in pts], [p["time_s"] for p in pts], "o-", color=colors[m], label=f"{m}")
        a.plot([p["size"] for p in pts], [p["floor_s"] for p in pts], "--", color=colors[m], alpha=0.6,
               label=f"{m} floor")
    a.set(xscale="log", yscale="log", xlabel="image side (pixels)", ylabel="time for 1 image (s)",
          title="center-pixel model (Flatten+Dense): time vs image size")
    from matplotlib.ticker import NullFormatter

    a.set_xticks(IMAGE_SIZES)
    a.set_xticklabels([str(s) for s in IMAGE_SIZES])
    a.xaxis.set_minor_formatter(NullFormatter())
    a.legend(fontsize=8, ncol=2)
    a = ax[1, 1]
    base = data["memory"]["baseline"]["maxrss_mb"]
    for m, (key, _) in MEMORY.items():
        pts = data["memory"][m]
        evals = [_mem_evals(m, p[key]) for p in pts]
        a.plot(evals, [p["maxrss_mb"] for p in pts], "o-", color=colors[m], label=f"{m} ({key})")
    a.axhline(base, color="gray", ls=":", label="model + 1 forward only")
    a.set(xscale="log", xlabel="model evaluations for 1 image", ylabel="process peak RSS (MB, ru_maxrss)",
          title="MNIST CNN: process peak memory vs perturbations\n(flat = one chunk at a time)")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mem_evals(method, v):
    if method == "rise":
        return v
    if method == "pda":
        return 28 * 28 * v + 1
    return v * (28 * 28 + 1)


def text(data):
    b, s, m = data["batch"], data["size"], data["memory"]
    lines = []
    for name, pts in b.items():
        t = [p["time_s"] for p in pts]
        lines.append(f"- {name}: batch_size {BATCH_SIZES[0]} -> {BATCH_SIZES[-1]}: {t[0]:.2f} s -> {t[-1]:.2f} s, "
                     f"peak extra memory {pts[0]['mem_mb']} -> {pts[-1]['mem_mb']} MB.")
    for name, pts in s.items():
        lines.append(f"- {name} at {pts[0]['size']} px: {pts[0]['time_s']:.3f} s (floor {pts[0]['floor_s']:.3f} s); "
                     f"at {pts[-1]['size']} px: {pts[-1]['time_s']:.3f} s (floor {pts[-1]['floor_s']:.3g} s).")
    base = m["baseline"]["maxrss_mb"]
    for name, (key, vals) in MEMORY.items():
        r = [p["maxrss_mb"] for p in m[name]]
        lines.append(f"- {name}, {key} {vals[0]} -> {vals[-1]} ({_mem_evals(name, vals[0])} -> "
                     f"{_mem_evals(name, vals[-1])} evaluations): peak RSS {r[0]:.0f} -> {r[-1]:.0f} MB "
                     f"(model + one forward pass alone: {base:.0f} MB).")
    return "\n".join(lines)


def run(path=HERE / "scaling.png", repeats=3):
    data = {"batch": batch_sweep(repeats), "size": size_sweep(repeats), "memory": memory_sweep()}
    figure(data, path)
    data["figure"] = str(path)
    data["figure_rel"] = Path(path).name
    data["text"] = text(data)
    (Path(path).with_suffix(".json")).write_text(json.dumps(data, indent=1))
    return data


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-point":
        method, key, value = sys.argv[2], sys.argv[3], sys.argv[4]
        print(json.dumps(memory_point(method, key, int(value) if method != "none" else 0)))
    else:
        print(text(run()))
