"""Markdown of the benchmark: the main table, the peer table, the summary, docs/performance.md;
and, for the metric benches' ``--append``, the rows and notes of an earlier result file."""
import json
import re
from pathlib import Path

from .harness import fmt_time

# native methods the acceptance questions are about
GRADIENT = ("grad", "inpgrad", "ig", "sg", "vargrad", "squaregrad", "gb", "deconvnet", "deeplift",
            "gradcam", "gradcampp")
PERTURBATION = ("occlusion", "pda", "shapley", "rise", "mp", "lime", "kernelshap")
WITHIN = 1.3


def _settings(row):
    s = row.get("settings") or {}
    return ", ".join(f"{k}={v}" for k, v in s.items())


def _r(p):
    if p.get("pearson") is not None:
        return f"{p['pearson']:.3f}"
    if p.get("max_abs_diff") is not None:
        return f"max diff {p['max_abs_diff']:.2g} (of {p.get('scale', 0):.2g})"
    return "-"


def one_line(error, width=160):
    """An error message as one table-safe line: the last line that names the error (a traced
    TensorFlow error puts it at the end, after the user-code frames)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    named = [ln for ln in lines if "Error" in ln.split(":")[0]]
    text = (named or lines or [""])[-1].replace("|", "/")
    return text if len(text) <= width else text[:width - 3] + "..."


def _peer_short(p):
    if "error" in p:
        return f"{p['peer']}: failed"
    if "time_s" not in p:
        return f"{p['peer']}: -"
    ex = "*" if p.get("extrapolated") else ""
    r = f", r {p['pearson']:.3f}" if p.get("pearson") is not None else (
        "" if p.get("max_abs_diff") is not None else ", no r")
    return f"{p['peer']} {p['ratio']:.3g}{ex}{r}"


def console_row(row):
    if "error" in row:
        return f"  {row.get('label', row['method']):24s} n/a: {row['error']}"
    peers = "; ".join(_peer_short(p) for p in row["peers"])
    rep = "" if row.get("repeats", 5) > 1 else " (1 repeat)"
    return (f"  {row.get('label', row['method']):24s} N={row['n']:<4d} {fmt_time(row['time_s']):>10s}{rep} floor "
            f"{fmt_time(row['floor_s']):>10s}  x{row['ratio_floor']:.2f}  mem {row.get('mem_mb')} MB"
            + (f"  | {peers}" if peers else ""))


MAIN_HEAD = ("| model | method | N | evals/input | ours | floor | ours/floor | peak MB | ours/peer (r) | settings |\n"
             "|---|---|---|---|---|---|---|---|---|---|")
PEER_HEAD = ("| model | method | peer | peer time | ours/peer | r | peer peak MB | note |\n"
             "|---|---|---|---|---|---|---|---|")


def main_table(rows):
    out = [MAIN_HEAD]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | {r.get('label', r['method'])} | - | - | n/a | - | - | - | - | {one_line(r['error'])} |")
            continue
        ev = f"{r['evals_per_input']}{' (f+b)' if r['backward'] else ''}"
        fl = fmt_time(r["floor_s"]) + ("*" if r.get("floor_extrapolated") else "")
        t = fmt_time(r["time_s"]) + ("" if r.get("repeats", 5) > 1 else " (1 run)")
        peers = "; ".join(_peer_short(p) for p in r["peers"]) or "-"
        out.append(f"| {r['model']} | {r.get('label', r['method'])} | {r['n']} | {ev} | {t} | {fl} | "
                   f"{r['ratio_floor']:.2f} | {r.get('mem_mb', '-')} | {peers} | {_settings(r)} |")
    return "\n".join(out)


def peer_table(rows):
    out = [PEER_HEAD]
    for r in rows:
        for p in r.get("peers", []):
            if "error" in p:
                out.append(f"| {r['model']} | {r['method']} | {p['peer']} | failed | - | - | - | "
                           f"{one_line(p['error'])} |")
                continue
            if "time_s" not in p:
                continue
            t = fmt_time(p["time_s"])
            if p.get("extrapolated"):
                t += f" ({p['extrapolated']})"
            elif p.get("repeats") == 1:
                t += " (1 run)"
            note = p.get("note", "") or ""
            out.append(f"| {r['model']} | {r['method']} | {p['peer']} | {t} | {p['ratio']:.3g} | {_r(p)} | "
                       f"{p.get('mem_mb', '-')} | {note} |")
    return "\n".join(out)


def summary(rows):
    """Which gradient methods are within 1.3x of the floor; which perturbation methods beat every
    peer and are within 1.3x of the floor (or below it)."""
    lines = []
    grad_in, grad_out, pert_yes, pert_no = [], [], [], []
    for r in rows:
        if "error" in r or r["method"] not in GRADIENT + PERTURBATION:
            continue
        name = r.get("label", r["method"])
        tag = f"{name} ({r['model']}, x{r['ratio_floor']:.2f})"
        if r["method"] in GRADIENT:
            (grad_in if r["ratio_floor"] <= WITHIN else grad_out).append(tag)
            continue
        timed = [p for p in r["peers"] if "time_s" in p]
        beats = all(p["ratio"] < 1 for p in timed)
        worst = max((p["ratio"] for p in timed), default=None)
        why = f"{name} ({r['model']}): floor x{r['ratio_floor']:.2f}, " + (
            f"slowest vs a peer x{worst:.2g}" if timed else "no timed peer")
        # "faster than every peer that has it": a method no peer has (MP) is judged on its floor alone
        (pert_yes if beats and r["ratio_floor"] <= WITHIN else pert_no).append(why)
    lines.append(f"Gradient methods within {WITHIN}x of their floor: " + (", ".join(grad_in) or "none"))
    lines.append(f"\nGradient methods above {WITHIN}x: " + (", ".join(grad_out) or "none"))
    lines.append(f"\nPerturbation methods faster than every timed peer and within {WITHIN}x of the floor "
                 "(or below it): " + ("; ".join(pert_yes) or "none"))
    lines.append("\nPerturbation methods that are not: " + ("; ".join(pert_no) or "none"))
    return "\n".join(lines)


SURROGATE_WITHIN = 1.2


def surrogates_md(rows):
    """Issue 11: native LIME / Kernel SHAP against the floor and the lime / shap / Xplique peers."""
    head = ("| model | method | N | samples/image | ours | floor | ours/floor | library | ours/library | "
            "Xplique | ours/Xplique | target met |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    out = [head]
    for r in rows:
        if r["method"] not in ("lime", "kernelshap") or "error" in r or "label" in r:
            continue
        lib = next((p for p in r["peers"] if p["peer"] in ("lime.lib", "shap.lib")), {})
        xpq = next((p for p in r["peers"] if p["kind"] == "xplique"), {})
        samples = r["settings"].get("num_samples", r["settings"].get("nsamples", "default"))

        def cell(p):
            if "time_s" not in p:
                return "-", "-"
            return fmt_time(p["time_s"]), f"{p['ratio']:.3g}"

        lt, lr = cell(lib)
        xt, xr = cell(xpq)
        ok = (r["ratio_floor"] <= SURROGATE_WITHIN and all(p.get("ratio", 9) < 1 for p in (lib, xpq)))
        out.append(f"| {r['model']} | {r['method']} | {r['n']} | {samples} | {fmt_time(r['time_s'])} | "
                   f"{fmt_time(r['floor_s'])} | {r['ratio_floor']:.2f} | {lt} | {lr} | {xt} | {xr} | "
                   f"{'yes' if ok else 'no'} |")
    return "\n".join(out) if len(out) > 1 else ""


# Lower bounds of ours/floor by the count of linear maps per layer (forward + transposed), against
# the gradient's 1 + 1: z, epsilon, w^2, flat reuse the forward pass (1 + 1); z+ and gamma need one
# more forward map (1 + 1 + 1); alpha-beta with beta != 0 two more, forward and transposed (1 + 2 + 2).
LRP_BOUND = {"lrp.z": 1.0, "lrp.epsilon": 1.0, "lrp.w_square": 1.0, "lrp.flat": 1.0,
             "lrp.alpha_1_beta_0": 1.5, "lrp.z_plus": 1.5, "deep_taylor": 1.5, "deep_taylor.bounded": 1.5,
             "lrp.epsilon_plus": 1.5, "lrp.epsilon_plus_flat": 1.5, "lrp.epsilon_gamma_box": 1.5,
             "lrp.sequential_preset_a": 1.5, "lrp.sequential_preset_a_flat": 1.5,
             "lrp.alpha_2_beta_1": 2.5, "lrp.alpha_beta": 2.5, "lrp.sequential_preset_b": 2.5,
             "lrp.sequential_preset_b_flat": 2.5, "lrp.epsilon_alpha_2_beta_1_flat": 2.5}


def is_native_lrp(method):
    return method.startswith("lrp.") or method.startswith("deep_taylor")


def lrp_md(rows):
    """Issue 22: native LRP / Deep Taylor composites against the gradient floor and iNNvestigate."""
    head = ("| model | method | N | ours | floor | ours/floor | bound | ours/grad row | ours/iNNvestigate (r) | "
            f"within {WITHIN}x |\n|---|---|---|---|---|---|---|---|---|---|")
    out = [head]
    for r in rows:
        if not is_native_lrp(r["method"]) or "error" in r:
            continue
        inn = next((p for p in r["peers"] if p["peer"].startswith("inn.")), {})
        peer = f"{inn['ratio']:.3g} ({_r(inn)})" if "ratio" in inn else "-"
        bound = LRP_BOUND.get(r["method"])
        grad = r.get("ratio_grad")
        out.append(f"| {r['model']} | {r['method']} | {r['n']} | {fmt_time(r['time_s'])} | {fmt_time(r['floor_s'])} | "
                   f"{r['ratio_floor']:.2f} | {bound if bound else '-'} | {f'{grad:.2f}' if grad else '-'} | {peer} | "
                   f"{'yes' if r['ratio_floor'] <= WITHIN else 'no'} |")
    return "\n".join(out) if len(out) > 1 else ""


def interventional_md(res):
    if not res:
        return ""
    if "error" in res:
        return f"Interventional graph learning: failed ({res['error']})"
    head = ("| model | variant | learning time | floor | ours/floor | plain loop | ours/plain | same graph |\n"
            "|---|---|---|---|---|---|---|---|")
    out = [f"Interventional graph learning ({res['model']}, class {res['target']}, {res['samples']} samples, "
           f"{res['units']} units: {res['evals']} (unit, sample) interventions; {res['weights']})", "", head]
    for v in res["variants"]:
        plain = v.get("plain_s")
        out.append(f"| {res['model']} | {v['name']} | {fmt_time(v['time_s'])} | {fmt_time(res['floor_s'])} | "
                   f"{v['time_s'] / res['floor_s']:.2f} | {fmt_time(plain) if plain else '-'} | "
                   f"{v['time_s'] / plain if plain else float('nan'):.3g} | {v.get('same_graph', '-')} |")
    return "\n".join(out)


def markdown(result):
    info = result["info"]
    xp = result.get("xplique")
    xps = (f"Xplique {xp.get('xplique')} on TF {xp.get('tensorflow')} / Keras {xp.get('keras')}"
           if isinstance(xp, dict) else f"Xplique: {xp}")
    v = info["versions"]
    parts = [
        f"Command: `{info['command']}` ({info['mode']}; {info['repeats']} timed calls after 1 warm-up, median; "
        f"a contender whose first timed call takes over {info['slow_threshold_s']:.0f} s is timed once, marked (1 run)).",
        f"Machine: {info['cpu']}, {info['cpus']} CPUs, {info['machine']}; devices {', '.join(info['devices'])}; "
        f"load average at start {info['load_start']}, at end {info.get('load_end')} (shared machine); "
        f"{info['date']}; wall time {info.get('wall_s')} s.",
        f"Versions: TF {v.get('tensorflow') or v.get('tensorflow-cpu')}, tf-keras {v.get('tf-keras')}, "
        f"iNNvestigate {v.get('innvestigate')}, tf-explain {v.get('tf-explain')}, shap {v.get('shap')}, "
        f"lime {v.get('lime')}; {xps}.", "",
        "Cases: " + "; ".join(f"**{k}** {c['input_shape']}: {c['inputs']}, weights {c['weights']}, "
                               f"up to {c['n_max']} inputs, batch_size {c['batch_size']}"
                               for k, c in result["cases"].items()), "",
        "`*` after a floor: timed on 8 chunks and scaled to the count; `*` after a peer ratio: a plain "
        "loop timed on a subset of its calls and extrapolated. ours/peer < 1: ours is faster. "
        "r: mean Pearson correlation of our maps with the peer's (\"no r\": the peer computes a "
        "different quantity, see the peer table).", "",
        main_table(result["rows"]), "",
        "### Native LIME and Kernel SHAP (issue 11)", "",
        f"Target: within {SURROGATE_WITHIN}x of the floor and faster than the lime / shap libraries and "
        "Xplique (ours/x < 1), on the same images with the same number of samples.", "",
        surrogates_md(result["rows"]), "",
    ]
    lrp = lrp_md(result["rows"])
    if lrp:
        parts += ["### Native LRP and Deep Taylor (issue 22)", "",
                  "bound: the least ours/floor the composite's rules allow by their count of linear maps "
                  "(see \"Native LRP and Deep Taylor\" above); ours/grad row: against the case's own "
                  "gradient row.", "", lrp, ""]
    parts += [
        "### Peers", "", peer_table(result["rows"]), "",
        "### Summary", "", summary(result["rows"]), "",
    ]
    if result.get("interventional"):
        parts += ["### Interventional graph learning", "", interventional_md(result["interventional"]), ""]
    sc = result.get("scaling")
    if sc and "error" not in sc:
        parts += ["### Scaling", "", f"![scaling]({sc.get('figure_rel', 'scaling.png')})", "",
                  sc.get("text", ""), ""]
    elif sc:
        parts += [f"Scaling failed: {sc['error']}", ""]
    return "\n".join(parts)


DOC_HEAD = """# Performance

How fast each method is, against the least work it could do (the floor) and against the other
libraries that implement it, on the same inputs, with the same settings, in the same run. The
numbers below are regenerated by `make bench` (about 30 minutes on a 2-core CPU; `make
bench-quick` is a smoke run of every method in about 3 minutes that leaves this page alone;
`make bench-setup-xplique` creates Xplique's own virtualenv, `bench/.venv-xplique`).

## What is measured

* **ours**: median wall time of `--repeats` calls (at least 5) of `explainer(x, targets)` after one
  warm-up call (tracing, analyzer builds), on N inputs; short rows get more calls, until ours has
  run 1 s in all (at most 10x `--repeats`), so a 10 ms row is a median of dozens. N is the case's number of inputs (256 MNIST, 64 CIFAR-10, 1
  center-pixel image) or fewer for expensive methods: every row gets about the same work budget
  (`bench/cases.py`), so one row takes seconds, not hours. LIME and Kernel SHAP run on 32 images
  with 1,000 samples per image (issue 11), Meaningful Perturbation on the whole batch.
* **floor**: the same number of model evaluations as the method's algorithm needs
  (`bench/costs.py`: steps, samples, windows x values, permutations x features, masks,
  iterations), as forward or forward + backward passes through the model, in compiled chunks of the
  same `batch_size`, over inputs built in advance. Long floors are timed on 8 chunks and scaled.
  Meaningful Perturbation's iterations depend on each other (each Adam step needs the last), so
  no implementation can pack them into bigger batches: its floor is `max_iterations` passes of its
  N inputs, one chunk of N per step.
  Occlusion, PDA and Shapley sampling on a model that starts with a Conv2D or Flatten + Dense use
  the exact first-layer shortcut and only run the rest of the model per perturbation: they can run
  below the floor.
* **ours/floor**: ours and the floor are timed in alternation (ours, floor, ours, floor, ...) and
  the ratio is the median of the per-round ratios, so that both see the same machine load; the
  same for ours against the registry peers (iNNvestigate, tf-explain, lime, shap). Xplique runs in
  its own process after the case, and the plain loops are timed on a subset of their calls, so
  those ratios are medians taken minutes apart.
* **peak MB**: the largest increase of the process's resident memory over the level just before a
  timed call, sampled every 2 ms by a thread (on a GPU: `tf.config.experimental.get_memory_info`
  peak). Memory TensorFlow kept from earlier calls can be reused, so this is the extra memory a call
  needed, not the process total. The scaling figure's memory panel uses a fresh process per point
  and its `ru_maxrss`.
* **peers**, with the same settings: iNNvestigate (`inn.*`; the native LRP and Deep Taylor
  composites `lrp.z`, `lrp.epsilon`, `lrp.alpha_1_beta_0`, `lrp.alpha_2_beta_1`, `deep_taylor`,
  `deep_taylor.bounded` against iNNvestigate 2.1.2's analyzers of the same names on the same
  weights, `inn.lrp.*` / `inn.deep_taylor*`), tf-explain (`tfx.*`), lime (`lime.lib`), shap (`shap.*`), Xplique (own
  virtualenv, same weights through `.h5`; versions below), and a plain Python loop (one perturbed
  image per compiled model call; timed on a subset of its calls and extrapolated). Each peer's maps
  are correlated with ours (mean Pearson r per map), except where the peer computes a different
  quantity (its note says which).
* Settings: xaitf's defaults, except the per-case overrides listed in each row (the defaults of
  PDA, Shapley sampling, RISE and Meaningful Perturbation cost minutes per call on this CPU); the
  overrides apply to ours and the peers alike. LIME maps are segment weights (`mask_output=False`)
  for every contender, so that they can be correlated.

The machine is shared with other work: the load average is recorded, and only ratios taken within
one run are meaningful.

## Native LRP and Deep Taylor

The `lrp.*` and `deep_taylor*` rows run xaitf's own engine (`xaitf/graph/`); `inn.lrp.*` /
`inn.deep_taylor*` are iNNvestigate 2.1.2's analyzers on the same weights, the peer of the six
names they share. The floor of an LRP row is one compiled forward + backward of the same inputs
(the gradient floor), timed in alternation with ours.

**What limits the ratio.** A gradient costs one forward and one transposed linear map per layer.
The rules cost, per linear layer:

| rules | forward maps | transposed maps | least ours/floor |
|---|---|---|---|
| z, epsilon (z is the layer's own output), w^2, flat (input-independent denominator) | 1 | 1 | 1.0 |
| z+ / alpha_1_beta_0, gamma (z needs the modified weights) | 2 | 1 | 1.5 |
| alpha-beta with beta != 0 (x w+ and x w-, stacked in one map each way) | 3 | 2 | 2.5 |

so no implementation brings a composite with z+, gamma or alpha-beta rules on its convolutions
within 1.3x of one gradient. Deriving `x w-` from the layer's output (`y - b - x w+`) would save a
map (bound 2.0) but loses float32 digits where that sum is small (5.6e-4 of the map's max against
iNNvestigate on the MNIST-like net, over the 1e-4 the tests hold), so the rules compute it. Where
a layer's input is >= 0 (after a ReLU), the x- terms of alpha-beta vanish and are skipped; the
first layer and other signed inputs take the four-term form. What remains above the bound
(z, epsilon: 1.3-1.4x on the MNIST and CIFAR cases, 2026-12-05) is elementwise work: the stabilised
division over every pre-activation and the x * g product, memory-bound passes over tensors as
large as the first conv's output.

**BatchNorm and iNNvestigate.** Its LRP analyzers give BN their own z rule,
`x (y - beta) / ((x - mu) y) R` with a 1e-7 guard, whatever the analyzer's rule; with real BN
means `x - mu` is ~0 wherever a ReLU output is 0, and on study 4's VGG with random BN statistics
iNNvestigate's lrp.z relevance sums reach 1e11 for logits of ~0.1. xaitf folds BN into the layer
before it where it can, and otherwise applies the layer's rule to BN as an affine node; with zero
shifts the two agree within 3e-6 and both conserve f_c (tests/test_lrp_native.py).

"""


def write_docs(result, path):
    import shutil
    from pathlib import Path

    path = Path(path)
    sc = result.get("scaling")
    fig = ""
    if sc and "error" not in sc and sc.get("figure"):
        target = path.parent / "img" / "scaling.png"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(sc["figure"], target)
        fig = (f"## Scaling\n\n![time and memory scaling](img/scaling.png)\n\n{sc.get('text', '')}\n\n")
    md = markdown({**result, "scaling": None})
    path.write_text(DOC_HEAD + "## Latest run\n\n" + md + "\n" + fig)


def kept_rows(out, n, names):
    """The rows of an earlier result for metrics not in ``names``: from OUT.json if it has the same
    ``n``; without OUT.json, the table rows of OUT.md (same ``n`` in its title, "... N MNIST
    images ..."), kept as their markdown line (``md_row``)."""
    js, md = Path(str(out) + ".json"), Path(str(out) + ".md")
    if js.exists():
        old = json.loads(js.read_text())
        return [r for r in old["rows"] if r["metric"] not in names] if old.get("n") == n else []
    if not md.exists():
        return []
    text = md.read_text().splitlines()
    m = re.search(r"(\d+) MNIST images", text[0]) if text else None
    if not m or int(m.group(1)) != n:
        return []
    rows, models = [], {}
    for line in text[:_notes_start(text)]:
        said = re.fullmatch(r"Model (.+?): (.+)\.", line)
        if said:                                     # quantus_compare's "Model PATH: metric, metric."
            models.update({m: said.group(1) for m in said.group(2).split(", ")})
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or cells[0] in ("metric", "") or set(cells[0]) <= set("-"):
            continue
        if cells[0] not in names:
            rows.append({"metric": cells[0], "md_row": line, "source": md.name})
    for r in rows:
        if r["metric"] in models:
            r["model"] = models[r["metric"]]
    return rows


def merged_rows(out, n, rows):
    """``rows`` (just measured) merged into the earlier result's rows (:func:`kept_rows`): a row
    re-run takes its earlier place, the others keep theirs, metrics new to the table come last."""
    new = {r["metric"]: r for r in rows}
    old = kept_rows(out, n, ())
    merged = [new.pop(r["metric"], r) for r in old]
    return merged + [r for r in rows if r["metric"] in new]


def _notes_start(lines):
    return next((i for i, ln in enumerate(lines) if ln.startswith("## ")), len(lines))


def kept_notes(md):
    """The hand-written sections of an earlier OUT.md: everything from its first ``## `` heading on
    (a generated OUT.md has none), so that rewriting the generated part keeps them. "" if none."""
    md = Path(md)
    if not md.exists():
        return ""
    lines = md.read_text().splitlines()
    return "\n".join(lines[_notes_start(lines):])


if __name__ == "__main__":   # re-render results.md (and docs/performance.md) from a results .json
    import sys

    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("results.json"))
    res = json.loads(src.read_text())
    src.with_suffix(".md").write_text(markdown(res))
    if "--docs" in sys.argv:
        write_docs(res, Path(__file__).resolve().parents[1] / "docs" / "performance.md")

