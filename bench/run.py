"""Benchmark: every registered method against its floor and its peers, side by side, in one run.

For each model case (:mod:`bench.cases`) and each registered method: wall time (median of
``--repeats`` calls after one warm-up), peak memory, the floor (the same number of model
evaluations, forward or forward + backward, in compiled chunks of the same ``batch_size`` over
inputs built in advance: :class:`bench.harness.Floor`), the ratio to the floor, and for every peer
that has the method (:mod:`bench.peers`: iNNvestigate, tf-explain, lime, shap, Xplique, a plain
Python loop) its time, our/peer ratio and the Pearson correlation of the maps, so that a fast
wrong answer cannot look good. Then interventional graph learning (:mod:`bench.interventional`)
and the scaling curves (:mod:`bench.scaling`).

    python -m bench.run                 # full: bench/results.json, bench/results.md, docs/performance.md
    python -m bench.run --quick         # smoke run (< 3 min, Xplique on the first case only): bench/results-quick.{json,md}
    python -m bench.run --cases mnist_cnn --methods grad ig occlusion --no-xplique
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from xaitf import registry

from . import cases as C
from . import costs, peers as P, report, xplique_bridge as XB
from .harness import Floor, load_average, measure, measure_paired, pearson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# the same for ours and every peer, in every case: weight maps, so that maps can be correlated
BENCH_DEFAULTS = {"lime": {"mask_output": False}, "lime.lib": {"mask_output": False}}
SLOW = {"full": 20.0, "quick": 4.0}         # a contender whose first timed call takes longer: 1 call
MIN_S = {"full": 1.0, "quick": 0.0}         # short rows: more paired rounds, until ours ran this long
LOOP_CALLS = {"full": 300, "quick": 20}     # plain-loop calls timed before extrapolating


def _err(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0][:240] if str(e) else ''}"


def _maps2d(m):
    m = np.asarray(m)
    return m[..., 0] if m.ndim == 4 and m.shape[-1] == 1 else m


# extra rows: a registered method with other settings (no peers), shown as "method [settings]";
# shapley's Conv2D first-layer shortcut against its plain path (cases whose first layer is a Conv2D)
VARIANTS = [("shapley", {"shortcut": False}, ("mnist_cnn", "cifar_cnn", "xainn_baseline"))]


# registry names that are no method of their own: a row says why, nothing is timed
SKIP = {"lrp.composite": "skipped: needs a user composite dict; each named composite has its own "
                         "row (lrp.*, deep_taylor*)"}


def bench_method(case, method, repeats, mode, floor, xjobs, xsegments, pending, log=print,
                 with_peers=True, with_xplique=True, variant=None):
    """One row: ours, the floor, and the peers (Xplique jobs are queued in ``xjobs``)."""
    t_row = time.perf_counter()
    overrides = {**BENCH_DEFAULTS.get(method, {}), **case.settings(method), **(variant or {})}
    row = {"model": case.name, "method": method, "settings": dict(overrides), "peers": []}
    if method in SKIP:
        row["error"] = SKIP[method]
        log(f"  {method:24s} {SKIP[method]}")
        return row
    if variant:
        row["label"] = f"{method} [{', '.join(f'{k}={v}' for k, v in variant.items())}]"
        with_peers = False
    if method == "interventional" and "data" in case.extra:
        # graphs are learned from these held-out images in the warm-up call (once per class,
        # cached by the explainer); the timed calls are the attributions (graph learning is timed
        # on its own in the interventional section)
        overrides["data"] = case.extra["data"]
        row["settings"]["data"] = f"{len(case.extra['data'][0])} held-out images (graphs learned in warm-up)"
    try:
        ex = registry.create_explainer(method, case.model, batch_size=case.batch_size, progress=False,
                                       **overrides)
        evals, backward, cnote = costs.cost(method, ex)
    except Exception as e:  # noqa: BLE001 - a method that cannot run on this model is a result
        row["error"] = _err(e)
        log(f"  {method:24s} n/a: {row['error']}")
        return row
    n = case.n_for(evals, backward, method)
    x, t = case.x[:n], case.targets[:n]
    row.update(n=n, evals_per_input=evals, backward=backward, cost_note=cnote)
    floor_run, finfo = floor.runner(n * evals, backward, chunk=costs.floor_chunk(method, n))
    try:
        maps, st = measure_paired(lambda: ex(x, t), floor_run, repeats, slow=SLOW[mode],
                                  min_seconds=MIN_S[mode])
    except Exception as e:  # noqa: BLE001
        row["error"] = _err(e)
        row["trace"] = traceback.format_exc()[-600:]
        log(f"  {method:24s} failed: {row['error']}")
        return row
    row.update(time_s=st["time_s"], times=st["times"], repeats=st["repeats"], warmup_s=st["warmup_s"],
               mem_mb=st["mem_mb"], path=getattr(getattr(ex, "engine", None), "path", None),
               floor_s=st["floor_s"], floor_times=st["floor_times"], floor_chunks=finfo["chunks"],
               floor_chunk=finfo["chunk"],
               floor_extrapolated=finfo["extrapolated"], ratio_floor=st["ratio"], load=load_average())
    per_channel = None
    for peer in (P.PEERS.get(method, []) if with_peers else []):
        ent = {"peer": peer.name, "kind": peer.kind, "note": peer.note}
        try:
            ours_cmp = maps
            if peer.ours:
                if per_channel is None:
                    full = registry.create_explainer(method, case.model, batch_size=case.batch_size,
                                                     progress=False, channel_reduce="none", **overrides)
                    per_channel = full(x, t)
                ours_cmp = P.ours_transform(per_channel, peer.ours)
            if peer.kind == "registry":
                P.check_peer_memory(peer, ex, overrides)
                pex = registry.create_explainer(peer.target, case.model, batch_size=case.batch_size,
                                                progress=False, **P.peer_params(peer, ex, overrides))
                def ours_once():
                    t0 = time.perf_counter()
                    ex(x, t)
                    return time.perf_counter() - t0

                # peer and ours in alternation (shared machine): ours/peer = median per-round ratio
                pmaps, pst = measure_paired(lambda: pex(x, t), ours_once, repeats, slow=SLOW[mode])
                ent.update(time_s=pst["time_s"], repeats=pst["repeats"], mem_mb=pst["mem_mb"],
                           warmup_s=pst["warmup_s"], times=pst["times"], ours_times=pst["floor_times"],
                           ratio=1.0 / pst["ratio"], paired=True)
                if peer.compare:
                    ent["pearson"] = pearson(ours_cmp, _maps2d(pmaps))
            elif peer.kind == "loop":
                ent.update(P.run_loop(peer.target, ex, x, t, maps, LOOP_CALLS[mode]))
            elif peer.kind == "xplique":
                if not with_xplique:
                    continue
                job = XB.job_for(method, peer, ex, case.x, n)
                if peer.target in ("Lime", "KernelShap"):
                    xsegments[job["id"]] = ex.segments(x)
                xjobs.append(job)
                pending[job["id"]] = (ent, ours_cmp if peer.compare else None)
                ent["pending"] = job["id"]
        except Exception as e:  # noqa: BLE001 - a peer failing is a result, not a crash
            ent["error"] = _err(e)
        if "time_s" in ent and "ratio" not in ent:
            ent["ratio"] = row["time_s"] / ent["time_s"]
        row["peers"].append(ent)
    row["wall_s"] = round(time.perf_counter() - t_row, 2)
    log(report.console_row(row))
    return row


def run_xplique(case, xjobs, xsegments, pending, repeats, mode, log=print):
    """Run the queued Xplique jobs of a case and fill in their peer entries."""
    if not xjobs:
        return None
    log(f"  Xplique: {len(xjobs)} jobs in {XB.VENV.name} ...")
    t0 = time.perf_counter()
    try:
        versions, results = XB.run(case, xjobs, xsegments, repeats, SLOW[mode],
                                   HERE / ".cache" / f"xplique_{case.name}")
    except Exception as e:  # noqa: BLE001
        for ent, _ in pending.values():
            ent.pop("pending", None)
            ent["error"] = _err(e)
        log(f"  Xplique failed: {_err(e)}")
        return {"error": _err(e)}
    for jid, (ent, ours_cmp) in pending.items():
        res = results.get(jid, {"error": "no result"})
        ent.pop("pending", None)
        if "error" in res:
            ent["error"] = res["error"]
            continue
        ent.update(time_s=res["time_s"], repeats=res["repeats"], mem_mb=res["mem_mb"],
                   warmup_s=res["warmup_s"], times=res.get("times"))
        if ours_cmp is not None:
            try:
                ent["pearson"] = pearson(ours_cmp, _maps2d(res["maps"]))
            except Exception as e:  # noqa: BLE001
                ent["error"] = f"maps not comparable: {_err(e)}"
    log(f"  Xplique done in {time.perf_counter() - t0:.1f} s")
    return versions


def run_case(case, methods, repeats, mode, with_peers=True, with_xplique=True, log=print):
    log(f"\n== {case.name}: {case.inputs_note}; weights {case.weights_note}; up to {case.n_max} inputs")
    floor = Floor(case.model, case.x, case.targets, case.batch_size, max_steps=3 if mode == "quick" else 8)
    xjobs, xsegments, pending, rows = [], {}, {}, []
    for m in methods:
        rows.append(bench_method(case, m, repeats, mode, floor, xjobs, xsegments, pending, log,
                                 with_peers, with_xplique and XB.available()))
    for m, kw, where in VARIANTS:
        if m in methods and case.name in where:
            rows.append(bench_method(case, m, repeats, mode, floor, xjobs, xsegments, pending, log,
                                     variant=kw))
    versions = run_xplique(case, xjobs, xsegments, pending, repeats, mode, log) if xjobs else None
    grad = next((r for r in rows if r["method"] == "grad" and "time_s" in r and "label" not in r), None)
    for r in rows:          # the ratio once every peer time is in
        if grad is not None and "time_s" in r:
            # against the case's own gradient row (timed minutes apart: ratio_floor, paired, is the
            # steadier number; for one-pass methods the floor is a compiled gradient of the same N)
            r["ratio_grad"] = r["time_s"] / grad["time_s"] * grad["n"] / r["n"]
        for ent in r.get("peers", []):
            if "time_s" in ent and "time_s" in r and not ent.get("paired"):
                ent["ratio"] = r["time_s"] / ent["time_s"]
    return rows, versions


def machine_info(args, mode):
    import importlib.metadata as md

    def ver(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(sys.argv[1:] if args is None else args),
        "mode": mode, "machine": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "python": sys.version.split()[0],
        "versions": {p: ver(p) for p in ("tensorflow", "tensorflow-cpu", "tf-keras", "keras",
                                         "innvestigate", "tf-explain", "shap", "lime", "numpy")},
        "data_dir": C.data_dir() or None,
        "load_start": load_average(),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small budgets and settings, 2 repeats")
    ap.add_argument("--cases", nargs="*", default=None, help=f"subset of {', '.join(C.CASES)}")
    ap.add_argument("--methods", nargs="*", default=None, help="subset of registry names")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls (default 5, quick 2)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-xplique", action="store_true")
    ap.add_argument("--no-interventional", action="store_true")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--out", default=None, help="results .json (the .md is written beside it)")
    ap.add_argument("--docs", action="store_true", help="also write docs/performance.md (default: full run)")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    repeats = args.repeats or (2 if args.quick else 5)
    out = Path(args.out or HERE / ("results-quick.json" if args.quick else "results.json"))
    methods = args.methods or [m for m in registry.list_methods() if m not in SKIP]
    case_names = args.cases or list(C.DEFAULT)
    info = machine_info(argv, mode)
    info.update(repeats=repeats, warmup=1, slow_threshold_s=SLOW[mode], loop_calls=LOOP_CALLS[mode],
                bench_defaults=BENCH_DEFAULTS)
    t_start = time.perf_counter()
    print(f"bench ({mode}): {len(methods)} methods x {len(case_names)} models, {repeats} repeats; "
          f"load {info['load_start']}", flush=True)
    rows, cases_info, xversions = [], {}, None
    for name in case_names:
        case = C.build_case(name, quick=args.quick)
        cases_info[name] = {"inputs": case.inputs_note, "weights": case.weights_note, "n_max": case.n_max,
                            "budget": case.budget, "batch_size": case.batch_size,
                            "input_shape": list(case.x.shape[1:]), "overrides": case.overrides}
        # Xplique's worker starts a second TensorFlow (~12 s): the quick run takes it on the first case only
        xplique = not args.no_xplique and (not args.quick or name == case_names[0])
        r, v = run_case(case, methods, repeats, mode, not args.no_peers, xplique,
                        log=lambda s: print(s, flush=True))
        rows += r
        xversions = xversions or v
        tf.keras.backend.clear_session()
        partial = out.with_suffix(".partial.json")     # what is done so far survives a crash
        partial.write_text(json.dumps({"info": info, "cases": cases_info, "rows": rows},
                                      default=_json_default))
    result = {"info": info, "cases": cases_info, "rows": rows,
              "xplique": xversions if XB.available() else "not installed (make bench-setup-xplique)"}
    if not args.no_interventional and (args.methods is None or "interventional" in methods):
        from . import interventional as IV

        try:
            result["interventional"] = IV.run(quick=args.quick, repeats=repeats)
        except Exception as e:  # noqa: BLE001
            result["interventional"] = {"error": _err(e), "trace": traceback.format_exc()[-800:]}
        print(report.interventional_md(result["interventional"]), flush=True)
    if not args.no_scaling and not args.quick:
        from . import scaling

        try:
            result["scaling"] = scaling.run(HERE / "scaling.png")
        except Exception as e:  # noqa: BLE001
            result["scaling"] = {"error": _err(e), "trace": traceback.format_exc()[-800:]}
    info["load_end"] = load_average()
    info["wall_s"] = round(time.perf_counter() - t_start, 1)
    for r in rows:
        r.pop("trace", None) if "error" not in r else None
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=_json_default))
    os.replace(tmp, out)
    md = report.markdown(result)
    out.with_suffix(".md").write_text(md)
    if args.docs or (mode == "full" and args.cases is None and args.methods is None):
        report.write_docs(result, ROOT / "docs" / "performance.md")
    print(f"\nwrote {out} and {out.with_suffix('.md')} in {info['wall_s']} s", flush=True)
    return result


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    main()
