"""``--track`` of ``python -m xaitf run``: what one session logs to a tracker of
:mod:`xaitf.tracking` (parameters, throughput and metric values, the overview figure, the run's
JSON files as artifacts).
"""
import json

from .metrics import overview_figure
from .store import atomic_write, jsonable


def flat_params(meta, settings, args):
    out = {k: meta[k] for k in ("model_path", "model_sha256", "data", "split", "n", "scale", "target",
                                "chunk", "data_sha256")}
    out["engine"] = "ray" if args.address else args.engine
    for m, s in settings.items():
        for k, v in s["params"].items():
            out[f"{m}.{k}"] = v
        for k in ("batch_size", "seed", "channel_reduce"):
            out[f"{m}.{k}"] = s[k]
    return {k: json.dumps(jsonable(v)) if not isinstance(v, str) else v for k, v in out.items()}


def track_session(tracker, store, keys, summary, metric_values, complete, out):
    step = len(summary["sessions"]) - 1
    values = {}
    for k, r in summary["methods"].items():
        values[f"{k}.done"] = r["done"]
        if r["images_per_s_total"]:
            values[f"{k}.images_per_s"] = r["images_per_s_total"]
        values[f"{k}.failed"] = int(bool(r["failure"]))
    for k, vals in metric_values.items():
        for name, v in vals.items():
            values[f"{k}.{name}"] = v
    tracker.log_metrics(values, step=step)
    if complete:
        fig = overview_figure(store, keys)
        path = out / "overview.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
        import matplotlib.pyplot as plt

        plt.close(fig)
        tracker.log_artifact(path)
    for name in ("summary.json", "run.json", "metrics.json"):
        if (out / name).exists():
            tracker.log_artifact(out / name)
    status = "FAILED" if any(r["failure"] for r in summary["methods"].values()) else (
        "FINISHED" if complete else "KILLED")
    tracker.end(status)
