"""The report of ``python -m xaitf run``: ``<out>/report.md`` and ``<out>/report.html`` (with the
thumbnails in ``<out>/report_files/``), written at the end of every session (finished or
interrupted), and the run's entry in ``<index root>/index.html`` (:func:`xaitf.reports.update_index`).

Every file is written to a temporary name and renamed (:func:`xaitf.cli.atomic_write`); the report
links only relative paths: the thumbnails, ``store.h5``, ``run.json``, ``summary.json``, and for a
folder source each image's own file.
"""
import os
import time
from pathlib import Path

from .. import reports
from ..cli import atomic_write

FILES = "report_files"
MAX_ROWS = 200          # images listed with thumbnails (the store holds them all)


def _fmt(v, digits=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _link(path, out):
    rel = os.path.relpath(path, out)
    return rel.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def write_run_report(out, store, keys, summary, metric_values, run_info, source, policy, argv,
                     complete):
    """Write the run's report.md, report.html and thumbnails; returns the report.html path."""
    out = Path(out)
    files = out / FILES
    files.mkdir(exist_ok=True)
    n = store.n
    rows = min(n, MAX_ROWS)
    x = store.f["inputs"][:rows]
    targets, labels = store.array("targets"), store.array("labels")
    for i in range(rows):
        reports.write_png(files / f"input_{i:05d}.png", reports.image_rgb(x[i]))
    methods = [k for k in keys if k in store.done]
    for k in methods:
        maps = store.f["maps"][k][:rows]
        for i in range(rows):
            reports.write_png(files / f"{k}_{i:05d}.png", reports.map_rgb(maps[i]))

    meta = store.meta
    classes = source.get("classes")
    state = "finished" if complete else "not finished (rerun the same command to resume)"
    pre = [
        f"Command: `python -m xaitf {' '.join(argv)}`",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}; the run is **{state}**.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| model | `{meta.get('model_path')}` (sha256 `{str(meta.get('model_sha256'))[:16]}`) |",
        f"| data | {_fmt(source.get('description'))} |",
        f"| data content sha256 | `{str(meta.get('source_sha256', meta.get('data_sha256')))[:16]}` |",
        f"| images | {n} |",
        f"| explained class | {meta.get('target')} |",
        f"| resize | {_fmt(policy.get('resize'))} |",
        f"| channels | {_fmt(policy.get('channels'))} |",
        f"| scale | pixel values divided by {_fmt(policy.get('scale'))} |",
        f"| model input | {'x'.join(str(d) for d in policy.get('input_shape', []))} |",
        f"| chunk size | {meta.get('chunk')} |",
        f"| files | [store.h5](store.h5), [run.json](run.json), [summary.json](summary.json) |",
    ]
    if policy.get("preprocess"):
        pre.insert(-1, f"| preprocess | {_fmt(policy['preprocess'])} |")
    for note in source.get("notes", []):
        pre.append(f"\nNote: {note}.")
    lines = [f"# Run: {Path(str(meta.get('model_path'))).name} on {meta.get('data')}", "",
             *pre, "", "## Methods", "",
             "| method | done | images/s | compute s (total) | recomputed | failure |", "|---|---|---|---|---|---|"]
    for k in keys:
        r = summary["methods"].get(k, {})
        ips = r.get("images_per_s_total") or r.get("images_per_s_now")
        lines.append(f"| {k} | {r.get('done', 0)}/{n} | {_fmt(ips)} | {_fmt(r.get('seconds_total'))} | "
                     f"{r.get('recomputed', 0)} | {_fmt(r.get('failure')) if r.get('failure') else ''} |")
    if metric_values:
        names = sorted({m for v in metric_values.values() for m in v})
        lines += ["", "## Metrics", "", "| method | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for k, vals in metric_values.items():
            lines.append(f"| {k} | " + " | ".join(_fmt(vals.get(m)) for m in names) + " |")
    lines += ["", "## Images", "",
              f"The first {rows} of {n} images" if rows < n else f"All {n} images",
              "as the model saw them (after resizing and scaling), and each method's map (red "
              "positive, blue negative, white 0, each map scaled by its largest |value|; grey: not "
              "computed yet).", ""]
    head = ["#", "file" if source.get("kind") == "folder" else "row", "label", "explained", "input"] + methods
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    files_list = run_info.get("files")
    root = source.get("root")
    for i in range(rows):
        if files_list and root:
            name = f"[{files_list[i]}]({_link(Path(root) / files_list[i], out)})"
        else:
            name = str(int(store.f["indices"][i]))
        lab = int(labels[i])
        lab_text = "-" if lab < 0 else (f"{lab} ({classes[lab]})" if classes and lab < len(classes) else str(lab))
        tgt = int(targets[i])
        tgt_text = f"{tgt} ({classes[tgt]})" if classes and 0 <= tgt < len(classes) else str(tgt)
        cells = [str(i), name, lab_text, tgt_text, f"![input {i}]({FILES}/input_{i:05d}.png)"]
        cells += [f"![{k} {i}]({FILES}/{k}_{i:05d}.png)" for k in methods]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Method settings", "", "| method | settings |", "|---|---|"]
    for k, s in (run_info.get("settings") or {}).items():
        params = ", ".join(f"{a}={_fmt(b)}" for a, b in (s.get("params") or {}).items())
        extra = ", ".join(f"{a}={_fmt(b)}" for a, b in s.items() if a != "params" and not isinstance(b, dict))
        lines.append(f"| {k} | `{params}`{'; ' + extra if extra else ''} |")
    lines += ["", "## Versions", "", reports.versions_markdown(meta.get("versions") or reports.versions())]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return reports.write_html_report(out, text)


def index_entry(out, store, keys, summary, metric_values, complete):
    meta = store.meta
    methods = {}
    for k in keys:
        r = summary["methods"].get(k, {})
        methods[k] = {"done": f"{r.get('done', 0)}/{store.n}",
                      "images_per_s": r.get("images_per_s_total") or r.get("images_per_s_now"),
                      "metrics": metric_values.get(k, {})}
    return {"kind": "run", "name": Path(out).name, "folder": str(Path(out).resolve()),
            "title": f"{Path(str(meta.get('model_path'))).name} on {meta.get('data')}",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "headline": {"images": store.n, "state": "finished" if complete else "not finished",
                         "methods": methods}}

