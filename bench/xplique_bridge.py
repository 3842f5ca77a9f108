"""Run Xplique's methods for one case in a subprocess of Xplique's own virtualenv.

``make bench-setup-xplique`` creates ``bench/.venv-xplique`` (``pip install xplique==2.0.2``, which
brings TensorFlow 2.20, Keras 3 and tf-keras 2.20). The model is saved as tf-keras ``.h5`` files
(the full model, for black-box methods that explain probabilities, and the pre-softmax model, for
gradient methods); inputs, one-hot targets and our segment maps go through an ``.npz``;
:mod:`bench.xplique_worker` loads them with ``keras.models.load_model`` and times each method.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from xaitf.keras_bridge import logits_model

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-xplique"
PYTHON = VENV / "bin" / "python"
WHITE_BOX_SUM = ("GradientInput", "IntegratedGradients", "SmoothGrad", "SquareGrad", "VarGrad",
                 "GuidedBackprop", "DeconvNet")
SG_CLASS = {"none": "SmoothGrad", "square": "SquareGrad", "variance": "VarGrad"}


def available():
    return PYTHON.exists()


def job_for(method, peer, ex, x, n):
    """The worker's job for our explainer ``ex`` (same hyperparameters), or raise ValueError."""
    cls = peer.target
    kw = {"batch_size": int(ex.batch_size)}
    p = ex.params
    if cls in ("SmoothGrad", "SquareGrad", "VarGrad"):
        cls = SG_CLASS[p["postprocess"]]
        rng = x[:n].reshape(n, -1)
        spread = float(np.mean(rng.max(1) - rng.min(1)))
        kw.update(nb_samples=int(p["samples"]), noise=float(p["noise_scale"]) * spread)
    elif cls == "IntegratedGradients":
        kw.update(peer.params(ex))
    elif cls in ("GradCAM", "GradCAMPP"):
        kw["conv_layer"] = ex.layer.name
    elif cls == "Occlusion":
        kw.update(patch_size=list(ex.window), patch_stride=list(ex.stride),
                  occlusion_value=float(np.asarray(ex.fill).reshape(-1)[0]))
        if np.ptp(np.asarray(ex.fill)) != 0:
            raise ValueError("Xplique Occlusion takes one fill value")
    elif cls == "Rise":
        kw.update(nb_samples=int(p["masks"]), grid_size=int(p["cell"]),
                  preservation_probability=float(p["p"]))
    elif cls in ("Lime", "KernelShap"):
        fill = p["hide_color"] if cls == "Lime" else p["background"]
        if fill is None or np.ndim(fill) > 1:
            raise ValueError("Xplique takes one reference value per channel")
        kw["ref_value"] = np.broadcast_to(np.asarray(fill, np.float32), (x.shape[-1],)).tolist()
        kw["nb_samples"] = int(p["num_samples"] if cls == "Lime" else p["nsamples"])
        if cls == "Lime":
            kw["kernel_width"] = float(p["kernel_width"])
    if cls in WHITE_BOX_SUM:
        kw["reducer"] = "sum"
    if cls in ("Occlusion", "Rise", "Lime", "KernelShap") and \
            p.get("output", "probabilities") != "probabilities":
        raise ValueError("ours explains logits here; the Xplique job is set up for probabilities")
    return {"id": f"{method}:{peer.name}", "cls": cls, "kwargs": kw, "model": peer.model, "n": int(n)}


def run(case, jobs, segments, repeats, slow, workdir, timeout=3000):
    """Run ``jobs`` for ``case``; returns (versions, {job id: result with 'maps'}) or raises."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    case.model.save(str(workdir / "probs.h5"), save_format="h5")
    logits_model(case.model)[0].save(str(workdir / "logits.h5"), save_format="h5")
    n = max(j["n"] for j in jobs)
    onehot = np.eye(case.model.outputs[0].shape[-1], dtype=np.float32)[case.targets[:n]]
    arrays = {"x": case.x[:n], "onehot": onehot}
    for i, job in enumerate(jobs):
        if job["id"] in segments:
            job["seg"] = f"seg_{i}"
            arrays[job["seg"]] = segments[job["id"]].astype(np.int32)
    np.savez(workdir / "data.npz", **arrays)
    (workdir / "jobs.json").write_text(json.dumps({"repeats": repeats, "slow": slow, "jobs": jobs}))
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)          # Xplique 2.0.2 works on Keras 3
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(PYTHON), str(HERE / "xplique_worker.py"), str(workdir)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not (workdir / "results.json").exists():
        raise RuntimeError(f"Xplique worker failed (rc {proc.returncode}): {proc.stderr[-600:]}")
    res = json.loads((workdir / "results.json").read_text())
    maps = np.load(workdir / "maps.npz")
    for k, r in res["results"].items():
        if k in maps.files:
            r["maps"] = maps[k]
    return res["versions"], res["results"]


def python_version():
    return sys.version.split()[0]
