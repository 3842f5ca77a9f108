"""Study 4: LIME, Kernel SHAP and LRP on MNIST and CIFAR-10; the degradation test; a Bayesian MLP.

``python -m xaitf.studies mnist_cifar [--quick]`` reproduces arm-on/interpretable-image-classification
(seeds.md section 4) with the zoo's ``mnist_cnn``, ``cifar_vgg`` and ``bayesian_mlp``:

1. **Maps** (``compare_<model>.png``): 3 random test images per class (seeded) x {LIME, Kernel SHAP,
   LRP-epsilon, LRP-z}, the study's comparison; ``all_methods_<model>.png``: one test image per class
   x every method of xaitf that applies to a CNN classifier (gradient family, LRP and DeepTaylor,
   Grad-CAM(++), occlusion, RISE, LIME, Kernel SHAP). Gradient and LRP maps explain the logit of the
   predicted class (final softmax stripped); LIME and Kernel SHAP its probability, as the study did.
2. **Degradation** (:func:`xaitf.metrics.degradation`): keep the top 20% of pixels of each map (by
   signed value), set the rest to 0, classify; accuracy on the first 1,000 test images, beside the
   study's LIME 0.416 / 0.198, Kernel SHAP 0.232 / -, LRP 0.145 / 0.229 (MNIST / CIFAR-10). A random
   map gives the chance level of the test. Quirks fixed: CIFAR-10 maps live on the real 32x32 grid
   (the original used 28x28), "LRP" is LRP (epsilon and z rules; the original's MNIST run used
   iNNvestigate's Input analyser), and Kernel SHAP's removed segments take 0 on the [0, 1] input
   (the original filled them with 255). LIME's map is each superpixel's weight painted on its pixels
   (quickshift sized for 28/32-pixel images, :func:`xaitf.segmentation.quickshift_params`); Kernel
   SHAP runs over SLIC segments (50, compactness 30, sigma 3).
   **Original mode** (``degradation_mode`` ``original`` or ``both``, the default): the study's three
   MNIST notebooks replayed on our CNN, one quirk per function (:func:`input_analyzer_maps`,
   :func:`notebook_kept_pixels`, :func:`notebook_select`, :func:`notebook_destruct`,
   :func:`notebook_lime_params`, :func:`notebook_shap_params`): "LRP" ranks the Input analyser's map
   (the image itself, 28x28x3) with flat indices mapped by ``divmod(i, 28)`` (about 32 of the 156
   intended pixels kept); LIME uses lime's default quickshift (4 / 200 / 0.2: a few segments on a
   28x28 digit); Kernel SHAP fills removed segments with 255; all keep ``int(0.2 * 784) = 156``
   pixels chosen in bottleneck's argpartition order and set the rest to 0. The report puts each
   replay beside the paper's number and the corrected pipeline's, with measured reasons
   (``degradation_original_mnist_cnn.png``).
3. **Bayesian MLP** (``bayesian_mlp``, tfp mean-field posterior): the refusal rule (100 sampled
   networks, refuse unless some class's median probability exceeds 0.2) on the test digits and on
   100 uniform-noise images (study: 1,242 of 10,000 digits skipped, 96% accuracy on the rest, noise
   100/100 refused), and on letters A-J (study: notMNIST, 395/399 refused): real notMNIST when the
   data directory has ``notmnist.npz``, else the synthetic letters of
   :mod:`xaitf.data.synthetic_notmnist`, labelled "synthetic notMNIST" in the report, results.json
   and figure titles (``bayes_notmnist.png``); the posterior-averaged saliency (the mean over
   sampled networks of each one's input gradient of the predicted class's logit) with its per-pixel
   uncertainty (the std of those gradients); and the model-average confidence when the 20% most salient pixels (by |mean
   gradient|) are replaced by uniform noise, against 20% random pixels replaced the same way.

Sizes come from ``settings.MNIST_CIFAR_STUDY`` (``--set mnist_cifar.key=value``); ``--quick``
shrinks them (:data:`QUICK`). Outputs: ``report.md``, ``results.json`` and the PNGs.
"""
import time

import numpy as np

from . import common as C

STUDY = "mnist_cifar"
MODELS = (("mnist_cnn", "MNIST", "mnist"), ("cifar_vgg", "CIFAR-10", "cifar10"))
COMPARE = ("lime", "shap", "lrp.epsilon", "lrp.z")
ALL_METHODS = COMPARE + ("lrp.alpha_1_beta_0", "deep_taylor", "grad", "inpgrad", "ig", "sg", "gb",
                         "deconvnet", "deeplift", "gradcam", "gradcampp", "occlusion", "rise")
DEGRADE = ("lime", "shap", "lrp.epsilon", "lrp.z", "deep_taylor", "grad", "inpgrad", "gradcam", "random")
QUICK_ALL = ("lime", "shap", "lrp.epsilon", "grad", "inpgrad", "ig", "gradcam")
QUICK_DEGRADE = ("lime", "shap", "lrp.epsilon", "deep_taylor", "grad", "random")
# LRP and DeepTaylor run natively (xaitf.methods.lrp): on the VGG one trace per method, ~10-20 s on 2 CPU cores
QUICK_CIFAR = ("lime", "shap", "lrp.epsilon", "deep_taylor", "grad", "inpgrad", "gradcam")
# (study's name, MNIST, CIFAR-10): seeds.md section 4
REF_DEGRADATION = {"lime": ("LIME", 0.416, 0.198), "shap": ("Kernel SHAP", 0.232, None),
                   "lrp.epsilon": ("LRP", 0.145, 0.229), "lrp.z": ("LRP", 0.145, 0.229)}
REF_BAYES = {"skipped": 1242, "of": 10000, "accuracy_on_rest": 0.96, "noise_refused": 1.0, "notmnist": (395, 399),
             "model_average_accuracy": 0.89}
QUICK = {"per_class": 1, "degradation_images": 20, "cifar_degradation_images": 10, "lime_samples": 100,
         "shap_nsamples": 100, "train_limit": 2000, "epochs": 1, "bayes_test_images": 500,
         "bayes_samples": 100, "noise_images": 100, "saliency_images": 8, "saliency_samples": 20,
         "cifar_train_limit": 64, "bayes_epochs": 2, "eval_limit": 300}


def registry_name(name, p):
    """The registry method behind a study name: ``lime`` / ``shap`` (and their notebook replays
    ``lime.original`` / ``shap.original``) are the native batched programs (``lime``,
    ``kernelshap``), or the lime / shap libraries with ``surrogates="lib"``."""
    lib = str(p.get("surrogates", "native")) == "lib"
    lime, shap = ("lime.lib", "shap.lib") if lib else ("lime", "kernelshap")
    return {"lime": lime, "shap": shap, "lime.original": lime, "shap.original": shap}.get(name, name)


def method_params(name, p, quick):
    """Keyword arguments of one method in this study (beyond settings.py's defaults)."""
    if name == "lime.original":
        return notebook_lime_params(p)
    if name == "shap.original":
        return notebook_shap_params(p)
    kw = {"progress": False}
    if name == "lime":
        kw.update(num_samples=int(p["lime_samples"]), mask_output=False, segmenter="quickshift")
    elif name == "shap":
        kw.update(nsamples=int(p["shap_nsamples"]), segmenter="slic", n_segments=50, compactness=30,
                  sigma=3, background=0.0)
    elif name == "ig":
        kw.update(steps=16 if quick else 64)
    elif name == "occlusion":
        kw.update(window=4, stride=2)
    elif name == "rise":
        kw.update(masks=2000)
    return kw


# -- settings of this study that no method checks ---------------------------------------------
DEGRADATION_MODES = ("corrected", "original", "both")
NOTMNIST_SOURCES = ("auto", "synthetic", "real")


def check_params(p):
    """Refuse an invalid value of this study's own settings with one line (before any work)."""
    from ..errors import XaitfError

    mode = p.get("degradation_mode", "both")
    if not isinstance(mode, str) or mode.lower() not in DEGRADATION_MODES:
        raise XaitfError(f"mnist_cifar.degradation_mode must be one of {', '.join(DEGRADATION_MODES)}, got {mode!r}")
    src = p.get("notmnist", "auto")
    if not isinstance(src, str) or src.lower() not in NOTMNIST_SOURCES:
        raise XaitfError(f"mnist_cifar.notmnist must be one of {', '.join(NOTMNIST_SOURCES)}, got {src!r}")
    n = p.get("notmnist_images", 400)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise XaitfError(f"mnist_cifar.notmnist_images must be an integer >= 1, got {n!r}")
    keep = p.get("keep", 0.2)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < float(keep) <= 1:
        raise XaitfError(f"mnist_cifar.keep must be a fraction in (0, 1], got {keep!r}")
    return dict(p, degradation_mode=mode.lower(), notmnist=src.lower(), notmnist_images=int(n))


# -- the original notebooks' MNIST degradation pipelines (degradation_mode original / both) ----
# The study's three MNIST degradation notebooks each build their own pipeline; these functions
# replay them on our MNIST CNN, one quirk per function. (key, the study's name, the map the
# replay ranks pixels by, the corrected pipeline's methods shown beside it)
ORIGINAL = (("lrp", "LRP", "input", ("lrp.epsilon", "lrp.z")),
            ("lime", "LIME", "lime.original", ("lime",)),
            ("shap", "Kernel SHAP", "shap.original", ("shap",)))
ORIGINAL_TITLES = {"input": "Input analyser map (x itself), divmod(i, 28) indexing",
                   "lime.original": "LIME, lime's default quickshift (4 / 200 / 0.2)",
                   "shap.original": "Kernel SHAP, removed segments = 255"}
LIME_DEFAULT_QUICKSHIFT = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}   # lime 0.2.0.1's defaults
NOTEBOOK_SHAP_FILL = 255.0
NOTEBOOK_FILL = 0.0


def notebook_keep_count(keep=0.2, height=28, width=28):
    """Pixels a notebook means to keep: ``int(keep * 28 * 28)``.

    Quirk: the notebooks truncate (``int(0.2 * 784) = 156``) where
    :func:`xaitf.metrics.degradation` rounds (157).
    """
    return max(1, int(float(keep) * int(height) * int(width)))


def notebook_select(values, kth):
    """Indices that partition ``values`` (1-d) at ``kth``, in the order bottleneck's
    ``argpartition`` leaves them: int64 array, a permutation of ``range(len(values))``.

    The notebooks rank pixels with ``bottleneck.argpartition`` and keep its last ``n`` indices.
    Which of several equal values end up in that part (the three equal channels of a gray
    pixel, the pixels of one superpixel) is decided by its selection algorithm, and on these maps
    that decides which pixels are kept (the LIME replay's accuracy is 0.377 with bottleneck's choice
    and 0.157 with numpy's introselect on the same 300 maps). bottleneck is no dependency of xaitf;
    this is the algorithm it uses, written out: Hoare's FIND as given by Wirth (Algorithms + Data
    Structures = Programs, 1976), where before each pass the median of ``a[l], a[kth], a[r]`` is
    swapped into position ``kth`` (nothing moves when ``a[kth]`` is already the median), then
    ``x = a[kth]``, ``i = l``, ``j = r``; advance ``i`` while ``a[i] < x``, retreat ``j`` while
    ``x < a[j]``, swap and step both while ``i <= j``; continue on ``[l, j]`` or ``[i, r]``
    (or both bounds) until ``l >= r``. Checked once against bottleneck 1.6.1: the same top-156 index
    sets on all 1,001 maps tried (300 each of the three replays' maps on MNIST test rows
    8000-8299, 100 random maps with values 0-3 and an all-zero map).
    """
    a = np.asarray(values, np.float64).ravel().tolist()
    idx = list(range(len(a)))
    k = int(kth)
    if not 0 <= k < len(a):
        from ..errors import InputError

        raise InputError(f"kth={kth} is outside an array of {len(a)} values")
    lo, hi = 0, len(a) - 1
    while lo < hi:
        al, ak, ar = a[lo], a[k], a[hi]
        m = k
        if al > ak:
            if ak < ar:
                m = lo if al < ar else hi
        elif ak > ar:
            m = lo if al > ar else hi
        if m != k:
            a[k], a[m] = a[m], a[k]
            idx[k], idx[m] = idx[m], idx[k]
        x, i, j = a[k], lo, hi
        while i <= j:
            while a[i] < x:
                i += 1
            while x < a[j]:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                idx[i], idx[j] = idx[j], idx[i]
                i += 1
                j -= 1
        if j < k:
            lo = i
        if k < i:
            hi = j
    return np.asarray(idx, np.int64)


def notebook_ranked_indices(heatmap, n):
    """Flat (row-major) indices of the ``n`` largest entries of ``heatmap`` as the array is stored.

    Quirk: the notebooks rank the map array as it is, whatever its shape, by its signed values:
    ``bottleneck.argpartition(arr, arr.size - n, axis=None)[-n:]`` (:func:`notebook_select`, the
    same choice among equal values).
    """
    flat = np.asarray(heatmap, np.float64).ravel()
    n = int(n)
    if not 1 <= n <= flat.size:
        from ..errors import InputError

        raise InputError(f"cannot rank the top {n} of a map with {flat.size} values")
    return notebook_select(flat, flat.size - n)[-n:]


def notebook_kept_pixels(heatmap, n, grid=(28, 28)):
    """The grid pixels a notebook keeps for one map: bool (H, W).

    Quirk (``top_n_indexes`` + ``get_other_pixels`` of all three notebooks): each ranked flat index
    ``i`` (:func:`notebook_ranked_indices`) becomes the pixel ``divmod(i, heatmap.shape[1])``, and
    only pairs inside the 28 x 28 loop are kept. For a (28, 28) map (LIME, Kernel SHAP) that is
    the ranked pixel itself. For the "LRP" notebook's (28, 28, 3) map, ``i = 3 (28 r + c) + channel``
    but ``divmod(i, 28)`` reads row ``i // 28`` (0..83) and column ``i % 28``, i.e. pixel number ``i``
    instead of ``i // 3``: only ranked values of the first 261 pixels (rows 0-9) land on the grid,
    each about three times further down the image than the pixel ranked, and repeated channels of
    one pixel land on neighbouring pixels; ranked indices from 784 on keep nothing. Of 156 intended
    pixels about 32 survive, a quarter of them on the digit.
    """
    h, w = int(grid[0]), int(grid[1])
    a = np.asarray(heatmap)
    if a.ndim < 2:
        from ..errors import InputError

        raise InputError(f"a notebook heatmap has at least two axes, got shape {a.shape}")
    rows, cols = np.divmod(notebook_ranked_indices(a, n), a.shape[1])
    keep = np.zeros((h, w), bool)
    ok = (rows < h) & (cols < w)
    keep[rows[ok], cols[ok]] = True
    return keep


def notebook_destruct(x, kept, fill=NOTEBOOK_FILL):
    """The notebooks' ``destruct_image`` on a batch: (N,H,W,C) with every pixel outside ``kept``
    (N,H,W) set to ``fill`` in all channels.

    Quirk: the study's README says the removed pixels become "0 or 255" (salt and pepper), but in
    all three notebooks the random line is commented out and the value is 0.
    """
    x = np.asarray(x, np.float32)
    kept = np.asarray(kept, bool)
    if kept.shape != x.shape[:3]:
        from ..errors import InputError

        raise InputError(f"kept pixels {kept.shape} do not match images {x.shape}")
    return np.where(kept[..., None], x, np.float32(fill)).astype(np.float32)


def input_analyzer_maps(x):
    """The "LRP" notebook's heatmaps: iNNvestigate's ``input`` analyser, i.e. the input itself.

    Quirk: the notebook's analyser list starts with ``("input", ...)`` and the degradation cell
    ranks ``analysis[idx, 0]``, the first analyser's output: the (28, 28, 3) image, not an LRP
    relevance map (the LRP-z and LRP-epsilon analyses are computed but never used there).
    Returns float64 (N, 28, 28, 3), all three channels kept, as the notebook's array.
    """
    return np.array(x, np.float64)


def notebook_lime_params(p):
    """Arguments of the LIME replay: lime 0.2.0.1's ``explain_instance`` defaults where they
    matter for the ranking.

    Quirk: lime's default segmentation, ``quickshift(kernel_size=4, max_dist=200, ratio=0.2)``, is
    sized for photographs; on a 28 x 28 digit it makes a few coarse segments (their number is
    measured in each run: ``segments_mean`` in results.json). The rest as lime's defaults and the
    notebook: hidden segments take their mean colour (``hide_color=None``), ``num_samples``
    (1000) masks, kernel width 0.25, the top label (the predicted class; probabilities), and the
    map is each segment's weight painted on its pixels (``np.vectorize(dict.get)(segments)``).
    """
    return {"progress": False, "num_samples": int(p["lime_samples"]), "mask_output": False,
            "segmenter": "quickshift", "hide_color": None, "kernel_width": 0.25, **LIME_DEFAULT_QUICKSHIFT}


def notebook_shap_params(p):
    """Arguments of the Kernel SHAP replay.

    Quirk: the notebook's masking function (shap's image example) fills the removed segments with
    255 although the model's inputs are in [0, 1]: every coalition's image has bright saturated
    blocks, far outside the training data. Otherwise as the study: SLIC (50 segments, compactness
    30, sigma 3), ``shap_nsamples`` (1000) coalitions, the predicted class's probability, each
    segment's value painted on its pixels.
    """
    return {"progress": False, "nsamples": int(p["shap_nsamples"]), "segmenter": "slic", "n_segments": 50,
            "compactness": 30, "sigma": 3, "background": NOTEBOOK_SHAP_FILL}


class Maps:
    """Maps of test images ``x`` by index, each computed once per (method, image).

    Explainers are built once per method; every map explains the image's predicted class.
    ``random`` is a seeded uniform map (the chance level of the degradation test); ``input`` the
    image itself (the "LRP" notebook's Input analyser, :func:`input_analyzer_maps`, (H,W,3));
    ``lime.original`` / ``shap.original`` the notebooks' LIME and Kernel SHAP settings. Every method
    here explains each image on its own (LIME and Kernel SHAP with the same seed per image), so a
    cached map is the map a fresh call would give.
    """

    def __init__(self, model, x, p, quick, seed):
        self.model, self.x, self.p, self.quick, self.seed = model, x, p, quick, seed
        self.pred = {}
        self._ex, self._cache = {}, {}
        self.seconds, self.notes = {}, {}
        self.failed = {}      # method -> one-line error (see _try_maps)

    def has(self, name, idx):
        """Whether the maps of ``name`` for every image of ``idx`` are already computed."""
        return all((name, int(i)) in self._cache for i in np.asarray(idx).ravel())

    def predicted(self, idx):
        idx = np.asarray(idx)
        todo = np.asarray([i for i in idx if int(i) not in self.pred], np.int64)
        if len(todo):
            for i, c in zip(todo, _predict(self.model, self.x[todo]).argmax(1)):
                self.pred[int(i)] = int(c)
        return np.asarray([self.pred[int(i)] for i in idx], np.int64)

    def __call__(self, name, idx):
        idx = np.asarray(idx, np.int64)
        todo = np.asarray([i for i in idx if (name, int(i)) not in self._cache], np.int64)
        t0 = time.perf_counter()
        if len(todo) and name == "random":
            rng = np.random.default_rng(self.seed)
            full = rng.random((len(self.x),) + self.x.shape[1:3])
            out = full[todo]
        elif len(todo) and name == "input":
            out = input_analyzer_maps(self.x[todo])
            self.notes[name] = "the input image itself (iNNvestigate's 'input' analyser)"
        elif len(todo):
            from ..registry import create_from_presets

            if name not in self._ex:
                self._ex[name] = create_from_presets(registry_name(name, self.p), self.model, seed=self.seed,
                                                     **method_params(name, self.p, self.quick))
                self.notes[name] = getattr(self._ex[name], "output_note", "")
            out = self._ex[name](self.x[todo], self.predicted(todo))
        if len(todo):
            for i, a in zip(todo, np.asarray(out, np.float64)):
                self._cache[(name, int(i))] = a
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return np.stack([self._cache[(name, int(i))] for i in idx])


def _title(name):
    from ..registry import title

    if name in ORIGINAL_TITLES:
        return ORIGINAL_TITLES[name]
    return "random map" if name == "random" else title(name)


def maps_figure(x, rows, maps, names, methods, header):
    """Rows of images x [input, each method]; maps are raw (LIME/SHAP values, logit relevances)."""
    from matplotlib.figure import Figure

    n, m = len(x), len(methods)
    fig = Figure(figsize=(1.95 * (m + 1), 1.75 * n + 1.0), dpi=80)
    axes = fig.subplots(n, m + 1, squeeze=False)
    for i in range(n):
        C.show_rgb(axes[i, 0], x[i], rows[i], fontsize=7)
        for j, meth in enumerate(methods):
            C.map_panel(fig, axes[i, j + 1], maps[meth][i], _title(meth) if i == 0 else None, fontsize=7)
    fig.suptitle(header, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.97, top=1 - 0.85 / (1.75 * n + 1.0), bottom=0.01,
                        wspace=0.55, hspace=0.3)
    return fig


def part_maps(key, label, dataset, model, maps, x, y, p, quick, folder, seed, say, methods):
    """Figures: the study's comparison (per_class images per class) and all methods (1 per class)."""
    names = C.class_names(dataset)
    rs = np.random.RandomState(seed)
    sel = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        sel.extend(sorted(rs.choice(idx, size=min(int(p["per_class"]), len(idx)), replace=False)))
    sel = np.asarray(sel)
    probs = _predict(model, x[sel])
    pred = maps.predicted(sel)
    rows = [f"#{i} true {names[y[i]]}\npred {names[k]} ({probs[j, k]:.2f})" for j, (i, k) in enumerate(zip(sel, pred))]
    compare = _try_maps(maps, [m for m in COMPARE if m in methods], sel, key, say)
    say(f"{key}: LIME, Kernel SHAP, LRP on {len(sel)} images")
    figs = {}
    fig = maps_figure(x[sel], rows, compare, names, list(compare),
                      f"{label} ({key}): LIME, Kernel SHAP (probability of the predicted class) and LRP "
                      "(its logit); red = for, blue = against")
    figs[f"compare_{key}"] = str(C.save_fig(fig, folder, f"compare_{key}"))
    pos = np.asarray([j for j in range(len(sel)) if j % int(p["per_class"]) == 0])
    first = sel[pos]
    all_maps = _try_maps(maps, methods, first, key, say)
    say(f"{key}: {len(all_maps)} methods on {len(first)} images")
    fig = maps_figure(x[first], [rows[j] for j in pos], all_maps, names, list(all_maps),
                      f"{label} ({key}): every applicable method, one test image per class (raw maps; "
                      "LIME/SHAP explain the probability, the others the logit)")
    figs[f"all_methods_{key}"] = str(C.save_fig(fig, folder, f"all_methods_{key}"))
    return {"figure_indices": sel, "figures": figs, "methods": methods}


def _try_maps(maps, methods, idx, key, say):
    """``{method: maps}`` for the methods that run; a method that fails is recorded in
    ``maps.failed`` (one line) and left out, so one backend's failure does not end the study."""
    out = {}
    for m in methods:
        if m in maps.failed:
            continue
        try:
            out[m] = maps(m, idx)
        except Exception as e:  # noqa: BLE001 - reported in the report's "Methods not run"
            from ..cli import one_line

            maps.failed[m] = f"{type(e).__name__}: {one_line(e)}"
            say(f"{key}: {m} failed, left out: {maps.failed[m]}")
    return out


def _predict(model, x):
    from ..training import predict

    return predict(model, x, 256).astype(np.float64)


def part_degradation(key, model, maps, idx, y, p, methods, say):
    """Accuracy after keeping the top ``keep`` pixels of every method's map (test images ``idx``)."""
    from ..metrics import degradation

    xs, ys = maps.x[idx], y[idx]
    rows = []
    alt = p.get("fill_alt")
    for m in methods:
        if m in maps.failed:
            continue
        a = maps(m, idx)
        r = degradation(model, xs, a, ys, keep=float(p["keep"]), fill=p["fill"], seed=0,
                        progress=C.progress_enabled())
        rows.append({"method": m, "title": _title(m), "accuracy": r["accuracy"],
                     "confidence_true": r["confidence_true"], "accuracy_original": r["accuracy_original"],
                     "kept_pixels": r["kept_pixels"], "images": int(len(idx)),
                     "map_seconds": round(maps.seconds.get(m, 0.0), 1)})
        if alt is not None:    # the README's other fill (salt and pepper): the same maps, other removed pixels
            rows[-1]["accuracy_fill_alt"] = degradation(model, xs, a, ys, keep=float(p["keep"]), fill=alt,
                                                        seed=0)["accuracy"]
        say(f"{key}: degradation {m}: accuracy {r['accuracy']:.3f} (original {r['accuracy_original']:.3f})")
    return rows


def part_original(model, maps, idx, y, p, corrected_rows, say):
    """The study's three MNIST degradation notebooks replayed on ``model`` (test images ``idx``).

    Each replay ranks pixels by its notebook's map (:data:`ORIGINAL`), keeps them with the
    notebooks' indexing (:func:`notebook_kept_pixels`, ``int(keep * 784)`` intended), sets the rest
    to 0 (:func:`notebook_destruct`) and classifies. Returns one row per notebook with the
    accuracy, the paper's and the corrected pipeline's numbers, and what was measured about the
    kept pixels (how many, on the digit's ink or not), the predictions and the segments.
    """
    from ..segmentation import segment

    xs, ys = maps.x[idx], np.asarray(y[idx])
    n_keep = notebook_keep_count(p["keep"], *xs.shape[1:3])
    ink = xs.max(-1) > 0                     # the digit: MNIST's background is exactly 0
    ink_n = np.maximum(ink.sum((1, 2)), 1)
    undegraded = float(np.mean(_predict(model, xs).argmax(1) == ys))
    corrected = {d["method"]: d["accuracy"] for d in corrected_rows or ()}
    rows = []
    for key, name, meth, corr in ORIGINAL:
        got = _try_maps(maps, [meth], idx, "mnist_cnn", say)
        if meth not in got:
            continue
        a = got[meth]
        kept = np.stack([notebook_kept_pixels(a[i], n_keep, xs.shape[1:3]) for i in range(len(a))])
        probs = _predict(model, notebook_destruct(xs, kept, NOTEBOOK_FILL))
        pred = probs.argmax(1)
        counts = kept.sum((1, 2))
        on_ink = (kept & ink).sum((1, 2))
        classes, freq = np.unique(pred, return_counts=True)
        ref = REF_DEGRADATION[key if key != "lrp" else "lrp.epsilon"]
        row = {"key": key, "study_name": name, "map": meth, "title": _title(meth),
               "accuracy": float(np.mean(pred == ys)), "paper": ref[1], "accuracy_undegraded": undegraded,
               "corrected": {m: corrected.get(m) for m in corr},
               "confidence_true": float(np.mean(probs[np.arange(len(ys)), ys])),
               "images": int(len(idx)), "intended_pixels": int(n_keep), "fill": NOTEBOOK_FILL,
               "kept_pixels_mean": float(counts.mean()), "kept_pixels_min": int(counts.min()),
               "kept_pixels_max": int(counts.max()),
               "kept_on_ink": float(np.mean(on_ink / np.maximum(counts, 1))),
               "ink_kept": float(np.mean(on_ink / ink_n)),
               "majority_class": int(classes[freq.argmax()]), "majority_share": float(freq.max() / len(pred)),
               "map_seconds": round(maps.seconds.get(meth, 0.0), 1)}
        if key == "lrp":
            # the same ranking with each pixel where it belongs (channels are equal: their mean)
            fixed = np.stack([notebook_kept_pixels(a[i].mean(-1), n_keep, xs.shape[1:3]) for i in range(len(a))])
            fp = _predict(model, notebook_destruct(xs, fixed, NOTEBOOK_FILL)).argmax(1)
            row.update(fixed_indexing_accuracy=float(np.mean(fp == ys)),
                       fixed_indexing_kept_mean=float(fixed.sum((1, 2)).mean()),
                       fixed_indexing_ink_kept=float(np.mean((fixed & ink).sum((1, 2)) / ink_n)))
        else:
            if key == "lime":
                seg = segment(xs, "quickshift", seed=maps.seed, **LIME_DEFAULT_QUICKSHIFT)
            else:
                seg = segment(xs, "slic", n_segments=50, compactness=30, sigma=3)
            nseg = np.asarray([len(np.unique(s)) for s in seg])
            row.update(segments_mean=float(nseg.mean()), segments_min=int(nseg.min()), segments_max=int(nseg.max()),
                       single_segment_fraction=float(np.mean(nseg == 1)))
            if key == "shap":
                row.update(shap_fill_effects(model, xs, seg, maps.predicted(idx)))
        # the corrected maps under the same 156-pixel rule: how much of the digit they keep
        row["corrected_ink_kept"] = {}
        for m in corr:
            if m in maps.failed or not maps.has(m, idx):
                continue
            ck = np.stack([notebook_kept_pixels(c, n_keep, xs.shape[1:3]) for c in maps(m, idx)])
            row["corrected_ink_kept"][m] = float(np.mean((ck & ink).sum((1, 2)) / ink_n))
        rows.append(row)
        say(f"mnist_cnn: original {name} replay: accuracy {row['accuracy']:.3f} (paper {ref[1]}), "
            f"{row['kept_pixels_mean']:.1f} of {n_keep} pixels kept, {row['ink_kept']:.0%} of the ink")
    return rows


def shap_fill_effects(model, x, segments, pred):
    """What the Kernel SHAP notebook's 255 fill does to our CNN (measured, for the report).

    ``one_segment_255_changes_prediction``: over images and their segments, the fraction of
    images with ONE segment set to 255 whose prediction differs from the image's own (the
    coalitions Kernel SHAP enumerates first); ``all_255_class`` / ``all_255_probability``: the
    prediction for the image with every segment removed (all pixels 255).
    """
    changed = []
    for i in range(len(x)):
        labels = np.unique(segments[i])
        batch = np.repeat(x[i:i + 1], len(labels), axis=0)
        for j, lab in enumerate(labels):
            batch[j][segments[i] == lab] = NOTEBOOK_SHAP_FILL
        changed.append(np.mean(_predict(model, batch).argmax(1) != pred[i]))
    full = _predict(model, np.full((1,) + x.shape[1:], NOTEBOOK_SHAP_FILL, np.float32))[0]
    return {"one_segment_255_changes_prediction": float(np.mean(changed)), "all_255_class": int(full.argmax()),
            "all_255_probability": float(full.max())}


def original_figure(x, y, maps, idx, p, rows=4):
    """Per image: the input, then for each notebook replay its map and the degraded image."""
    from matplotlib.figure import Figure

    n = min(rows, len(idx))
    sel = np.asarray(idx[:n])
    xs = maps.x[sel]
    n_keep = notebook_keep_count(p["keep"], *xs.shape[1:3])
    cols = [(meth, name) for _, name, meth, _ in ORIGINAL if meth not in maps.failed]
    fig = Figure(figsize=(2.0 * (1 + 2 * len(cols)), 2.05 * n + 1.1), dpi=80)
    axes = fig.subplots(n, 1 + 2 * len(cols), squeeze=False)
    for i in range(n):
        C.show_rgb(axes[i, 0], xs[i], f"#{sel[i]} true {y[sel[i]]}", fontsize=8)
        for j, (meth, name) in enumerate(cols):
            a = maps(meth, sel[i:i + 1])[0]
            kept = notebook_kept_pixels(a, n_keep, xs.shape[1:3])
            shown = a[..., 0] if a.ndim == 3 else a
            C.map_panel(fig, axes[i, 1 + 2 * j], shown, f"{name} notebook map" if i == 0 else None, fontsize=8,
                        kind="input" if meth == "input" else "map")
            C.show_rgb(axes[i, 2 + 2 * j], notebook_destruct(xs[i:i + 1], kept[None])[0],
                       f"kept {int(kept.sum())} of {n_keep}", fontsize=8)
    fig.suptitle("MNIST: the study's three degradation notebooks replayed on our CNN (left to right: "
                 "'LRP' = Input analyser map with divmod(i, 28) indexing;\nLIME with lime's default quickshift; "
                 "Kernel SHAP with removed segments = 255); removed pixels = 0 as in the notebooks", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.97, top=1 - 1.0 / (2.05 * n + 1.1), bottom=0.01, wspace=0.5,
                        hspace=0.35)
    return fig


# -- Bayesian MLP ------------------------------------------------------------------------------
def bayes_saliency(model, x, targets, samples, seed=0):
    """Gradients of ``samples`` sampled networks: array (samples, N, H, W, C).

    Each call of the model draws one network (tfp ``DenseReparameterization``) for the whole batch;
    the gradient is that network's logit of ``targets`` (the separate final softmax stripped)
    with respect to the input.
    """
    import tensorflow as tf

    from ..keras_bridge import logits_model

    fwd, _ = logits_model(model)
    tf.random.set_seed(int(seed))
    xt = tf.constant(np.asarray(x, np.float32))
    tt = tf.constant(np.asarray(targets, np.int32))

    @tf.function(autograph=False)
    def one(xi, ti):
        with tf.GradientTape() as tape:
            tape.watch(xi)
            z = fwd(xi, training=False)
            sel = tf.gather(z, ti, batch_dims=1)
        return tape.gradient(sel, xi)

    return np.stack([one(xt, tt).numpy() for _ in range(int(samples))])


def replace_pixels(x, mask, seed):
    """``x`` with the pixels of ``mask`` (N,H,W) replaced by uniform noise U(0, 1) (seeded)."""
    noise = np.random.default_rng(seed).random(x.shape).astype(np.float32)
    return np.where(mask[..., None], noise, x).astype(np.float32)


def part_bayes(args, p, quick, folder, seed, say):
    from ..metrics import binarize
    from ..zoo.bayesian import predict_mean, refusal_rule, sample_probs

    model, info = C.get_model_subset("bayesian_mlp", getattr(args, "models_dir", "models"),
                                     getattr(args, "data_dir", None), seed=seed, schedule="quick",
                                     epochs=p.get("bayes_epochs"), train_limit=p["train_limit"],
                                     eval_limit=p.get("eval_limit"), progress=bool(getattr(args, "progress", False)),
                                     safe_mode=C.load_safely(args))
    say(f"bayesian_mlp: {info['note']}")
    x, y, ds = C.load_split("bayesian_mlp", getattr(args, "data_dir", None))
    n = len(x) if p["bayes_test_images"] is None else min(int(p["bayes_test_images"]), len(x))
    x, y = x[:n], y[:n]
    probs = sample_probs(model, x, samples=int(p["bayes_samples"]), seed=seed)
    pred, refused = refusal_rule(probs, threshold=0.2)
    avg_acc = float(np.mean(probs[:10].mean(0).argmax(1) == y))
    acc_rest = float(np.mean(pred[~refused] == y[~refused])) if (~refused).any() else None
    noise = np.random.RandomState(seed).uniform(0, 1, (int(p["noise_images"]),) + x.shape[1:]).astype(np.float32)
    nprobs = sample_probs(model, noise, samples=int(p["bayes_samples"]), seed=seed + 1)
    _, nref = refusal_rule(nprobs, threshold=0.2)
    refusal = {"test_images": int(n), "skipped": int(refused.sum()), "skipped_fraction": float(refused.mean()),
               "skipped_per_10000": float(refused.mean() * 10000), "accuracy_on_rest": acc_rest,
               "model_average_accuracy": avg_acc, "noise_images": int(len(noise)),
               "noise_refused": int(nref.sum()), "noise_refused_fraction": float(nref.mean()),
               "rule": f"{int(p['bayes_samples'])} sampled networks; refuse unless some class's median "
                       "probability > 0.2"}
    say(f"bayesian_mlp: skipped {refused.sum()}/{n} digits ({refused.mean():.1%}), accuracy on the rest "
        f"{acc_rest if acc_rest is None else round(acc_rest, 4)}, noise refused {nref.sum()}/{len(noise)}")
    letters = part_notmnist(model, args, p, seed, say)
    refusal["notmnist"] = letters["numbers"]

    # saliency: mean and std over sampled networks of the predicted class's logit gradient
    m = min(int(p["saliency_images"]), n)
    xs, ys = x[:m], y[:m]
    target = predict_mean(model, xs, samples=10, seed=seed).argmax(1)
    grads = bayes_saliency(model, xs, target, int(p["saliency_samples"]), seed=seed)[..., 0]  # (S,m,H,W)
    mean, std = grads.mean(0), grads.std(0)
    important = binarize(np.abs(mean), rule="top_k", k=0.2)
    rng = np.random.default_rng(seed)
    rand_mask = np.stack([rng.permutation(important[i].size).reshape(important[i].shape)
                          < important[i].sum() for i in range(m)])
    x_imp = replace_pixels(xs, important, seed + 2)
    x_rand = replace_pixels(xs, rand_mask, seed + 2)

    def conf(images):
        pm = predict_mean(model, images, samples=10, seed=seed)
        return pm[np.arange(m), target], pm.argmax(1)

    c0, p0 = conf(xs)
    c_imp, p_imp = conf(x_imp)
    c_rand, p_rand = conf(x_rand)
    _, ref_imp = refusal_rule(sample_probs(model, x_imp, samples=int(p["bayes_samples"]), seed=seed))
    _, ref_rand = refusal_rule(sample_probs(model, x_rand, samples=int(p["bayes_samples"]), seed=seed))
    rel = std / (np.abs(mean) + 1e-12)
    saliency = {"images": int(m), "samples": int(p["saliency_samples"]),
                "confidence_original": float(c0.mean()), "confidence_important_noised": float(c_imp.mean()),
                "confidence_random_noised": float(c_rand.mean()),
                "kept_prediction_important": float(np.mean(p_imp == target)),
                "kept_prediction_random": float(np.mean(p_rand == target)),
                "refused_important": float(ref_imp.mean()), "refused_random": float(ref_rand.mean()),
                "mean_abs_saliency": float(np.abs(mean).mean()), "mean_std": float(std.mean()),
                "median_std_over_abs_mean": float(np.median(rel)),
                "replaced_pixels": int(important[0].sum()), "explained": "logit of the model-average prediction"}
    say(f"bayesian_mlp: confidence {c0.mean():.3f} -> {c_imp.mean():.3f} (top-20% salient pixels noised) vs "
        f"{c_rand.mean():.3f} (random 20% noised)")
    figs = {"bayes_saliency": str(C.save_fig(
        bayes_figure(xs, ys, mean, std, x_imp, x_rand, target, c0, c_imp, c_rand, int(p["saliency_samples"])),
        folder, "bayes_saliency")),
        "bayes_refusal": str(C.save_fig(refusal_figure(probs, nprobs, refused, nref, letters), folder,
                                        "bayes_refusal")),
        "bayes_notmnist": str(C.save_fig(notmnist_figure(letters), folder, "bayes_notmnist"))}
    return {"model": info, "refusal": refusal, "saliency": saliency, "figures": figs,
            "data": {"source": ds.source, "split": ds.split}}


def bayes_figure(x, y, mean, std, x_imp, x_rand, target, c0, c_imp, c_rand, samples, rows=5):
    from matplotlib.figure import Figure

    n = min(rows, len(x))
    fig = Figure(figsize=(13.5, 2.3 * n + 1.0), dpi=85)
    axes = fig.subplots(n, 5, squeeze=False)
    for i in range(n):
        C.show_rgb(axes[i, 0], x[i], f"true {y[i]}, pred {target[i]}\np = {c0[i]:.2f}")
        C.map_panel(fig, axes[i, 1], mean[i], "posterior-mean saliency" if i == 0 else None)
        C.map_panel(fig, axes[i, 2], std[i], "uncertainty (std)" if i == 0 else None, cmap="magma",
                    limits=(0.0, float(std[i].max()) or 1.0))
        C.show_rgb(axes[i, 3], x_imp[i], f"top-20% salient -> noise\np({target[i]}) = {c_imp[i]:.2f}")
        C.show_rgb(axes[i, 4], x_rand[i], f"random 20% -> noise\np({target[i]}) = {c_rand[i]:.2f}")
    fig.suptitle(f"Bayesian MLP: gradients of {samples} sampled networks (logit of the predicted class): "
                 "mean and std per pixel;\nmodel-average probability after replacing pixels with uniform noise",
                 fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.97, top=1 - 0.9 / (2.3 * n + 1.0), bottom=0.01, wspace=0.35, hspace=0.4)
    return fig


def part_notmnist(model, args, p, seed, say):
    """The refusal rule on letters A-J: real notMNIST from the data directory when it has
    ``notmnist.npz`` (``notmnist=auto`` or ``real``), else :mod:`xaitf.data.synthetic_notmnist`,
    labelled "synthetic notMNIST" in every output. Returns the images, their sampled probabilities
    and ``numbers`` (refused / total, beside the study's 395 / 399)."""
    from ..data.synthetic_notmnist import notmnist_images
    from ..zoo import registry
    from ..zoo.bayesian import refusal_rule, sample_probs

    d = notmnist_images(int(p["notmnist_images"]), getattr(args, "data_dir", None), p["notmnist"], seed)
    xl = registry.prepare_inputs("bayesian_mlp", d["x"])
    lprobs = sample_probs(model, xl, samples=int(p["bayes_samples"]), seed=seed + 3)
    lpred, lref = refusal_rule(lprobs, threshold=0.2)
    per = None
    if d["y"] is not None:
        per = {L: f"{int(lref[d['y'] == k].sum())} / {int((d['y'] == k).sum())}"
               for k, L in enumerate("ABCDEFGHIJ") if (d["y"] == k).any()}
    numbers = {"label": d["title"], "synthetic": d["synthetic"], "source": d["source"], "images": int(len(xl)),
               "refused": int(lref.sum()), "refused_fraction": float(lref.mean()),
               "accepted_predictions": {str(k): int(v) for k, v in zip(*np.unique(lpred[~lref], return_counts=True))},
               "refused_per_letter": per, "reference": REF_BAYES["notmnist"]}
    if d.get("fonts"):
        numbers["fonts"] = d["fonts"]
    say(f"bayesian_mlp: {d['title']}: refused {int(lref.sum())}/{len(xl)} (study on notMNIST: "
        f"{REF_BAYES['notmnist'][0]}/{REF_BAYES['notmnist'][1]})")
    return {"x": d["x"], "y": d["y"], "probs": lprobs, "refused": lref, "pred": lpred, "title": d["title"],
            "numbers": numbers}


def notmnist_figure(letters, n=20):
    """The first ``n`` letters with the rule's decision (refused, or the digit it predicts)."""
    from matplotlib.figure import Figure

    n = min(n, len(letters["x"]))
    cols = 10
    rows = -(-n // cols)
    fig = Figure(figsize=(1.25 * cols, 1.45 * rows + 0.9), dpi=90)
    axes = fig.subplots(rows, cols, squeeze=False)
    med = np.median(letters["probs"], axis=0)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= n:
            continue
        what = "refused" if letters["refused"][i] else f"says {letters['pred'][i]}"
        name = "" if letters["y"] is None else "ABCDEFGHIJ"[int(letters["y"][i])] + ": "
        C.show_rgb(ax, letters["x"][i], f"{name}{what}\nmax median {med[i].max():.2f}", fontsize=7)
    num = letters["numbers"]
    fig.suptitle(f"Bayesian MLP on {num['label']}: {num['refused']} / {num['images']} refused "
                 f"(study on notMNIST: {REF_BAYES['notmnist'][0]} / {REF_BAYES['notmnist'][1]})", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.75 / (1.45 * rows + 0.9), bottom=0.01, wspace=0.15,
                        hspace=0.55)
    return fig


def refusal_figure(probs, nprobs, refused, nref, letters=None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.0), dpi=100)
    ax = fig.subplots()
    top_t = np.median(probs, axis=0).max(1)
    top_n = np.median(nprobs, axis=0).max(1)
    bins = np.linspace(0, 1, 41)
    ax.hist(top_t, bins=bins, alpha=0.7, label=f"test digits ({refused.mean():.1%} refused)")
    ax.hist(top_n, bins=bins, alpha=0.7, label=f"uniform noise ({nref.mean():.0%} refused)")
    if letters is not None:
        top_l = np.median(letters["probs"], axis=0).max(1)
        ax.hist(top_l, bins=bins, alpha=0.6, label=f"{letters['title']} ({letters['refused'].mean():.0%} refused)")
    ax.axvline(0.2, color="k", ls="--", lw=1, label="threshold 0.2")
    ax.set_xlabel("largest per-class median probability over sampled networks")
    ax.set_ylabel("images")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Bayesian MLP refusal rule: predict only if some class's median probability > 0.2", fontsize=10)
    fig.tight_layout()
    return fig


# -- the study ---------------------------------------------------------------------------------
def run(args):
    """Run study 4; returns a dict with the run folder and the numbers written to results.json."""
    first = check_params(C.study_params(args, STUDY, QUICK))     # a bad setting: one line, before any work
    if first["notmnist"] == "real":
        from ..data.synthetic_notmnist import FILE_NAME, find_notmnist_file

        if find_notmnist_file(getattr(args, "data_dir", None)) is None:
            from ..errors import DataError

            raise DataError(f"mnist_cifar.notmnist=real but the data directory has no {FILE_NAME} (arrays x uint8 "
                            "(N,28,28), optional y 0-9 for A-J); use notmnist=auto or synthetic")
    start = C.begin_run(args, STUDY, QUICK)   # settings section (full sizes), QUICK with --quick
    quick, seed, folder, say = start.quick, start.seed, start.folder, start.say
    p = check_params(start.params)
    mode = p["degradation_mode"]
    result = {"study": STUDY, "quick": quick, "seed": seed, "folder": str(folder),
              "command": C.command_line(getattr(args, "argv", None)), "settings": p,
              "models": {}, "data": {}, "maps": {}, "degradation": {}, "figures": {}, "method_notes": {}}
    for key, label, dataset in MODELS:
        limit = p.get("cifar_train_limit", p["train_limit"]) if key == "cifar_vgg" else p["train_limit"]
        model, info = C.get_model_subset(key, getattr(args, "models_dir", "models"),
                                         getattr(args, "data_dir", None), seed=seed, schedule="quick",
                                         epochs=p["epochs"], train_limit=limit, eval_limit=p.get("eval_limit"),
                                         progress=bool(getattr(args, "progress", False)),
                                         safe_mode=C.load_safely(args))
        say(f"{key}: {info['note']}")
        x, y, ds = C.load_split(key, getattr(args, "data_dir", None))
        result["models"][key] = info
        result["data"][key] = {"source": ds.source, "split": ds.split, "test_images": int(len(x))}
        maps = Maps(model, x, p, quick, seed)
        if quick:
            methods = QUICK_CIFAR if key == "cifar_vgg" else QUICK_ALL
            degrade = [m for m in QUICK_DEGRADE if m in methods or m == "random"]
        else:
            methods, degrade = ALL_METHODS, DEGRADE
        part = part_maps(key, label, dataset, model, maps, x, y, p, quick, folder, seed, say, methods)
        result["maps"][key] = {"figure_indices": part["figure_indices"], "methods": part["methods"]}
        result["figures"].update(part["figures"])
        n = int(p["cifar_degradation_images"] if key == "cifar_vgg" else p["degradation_images"])
        # quick: the degradation test runs on the figure's images (maps computed once)
        idx = part["figure_indices"][:n] if quick else np.arange(min(n, len(x)))
        result["degradation"][key] = (part_degradation(key, model, maps, idx, y, p, degrade, say)
                                      if mode != "original" else [])
        if key == "mnist_cnn" and mode != "corrected":
            result["degradation_original"] = {key: part_original(model, maps, idx, y, p, result["degradation"][key],
                                                                 say)}
            result["figures"]["degradation_original_mnist_cnn"] = str(C.save_fig(
                original_figure(x, y, maps, idx, p), folder, "degradation_original_mnist_cnn"))
        result["method_notes"][key] = {m: {"explained": maps.notes.get(m, ""), "seconds": round(s, 1)}
                                       for m, s in maps.seconds.items() if m not in maps.failed}
        result.setdefault("failed", {})[key] = dict(maps.failed)
    bayes = part_bayes(args, p, quick, folder, seed, say)
    result["figures"].update(bayes.pop("figures"))
    result["bayesian"] = bayes
    result["reference"] = {"degradation": {k: {"name": v[0], "mnist": v[1], "cifar10": v[2]}
                                           for k, v in REF_DEGRADATION.items()}, "bayesian": REF_BAYES}
    result["seconds"] = round(start.seconds(), 1)
    C.write_json(folder, "results", result)
    report(folder, result)
    say(f"mnist_cifar: done in {result['seconds']:.0f} s")
    return result


def report(folder, r):
    quick, p = r["quick"], r["settings"]
    rows = {key: {d["method"]: d for d in r["degradation"][key]} for key in r["degradation"]}
    alt = p.get("fill_alt")
    alt_cols = ([f"MNIST (ours, fill {alt})", f"CIFAR-10 (ours, fill {alt})"]
                if alt is not None and any("accuracy_fill_alt" in d for v in rows.values() for d in v.values())
                else [])
    deg = C.Table(["method", f"MNIST (ours, fill {p['fill']})", "MNIST (study)",
                   f"CIFAR-10 (ours, fill {p['fill']})", "CIFAR-10 (study)"] + alt_cols)
    methods = list(dict.fromkeys(m for key in rows for m in rows[key]))

    def get(key, m, field):
        return rows.get(key, {}).get(m, {}).get(field)

    for m in methods:
        ref = REF_DEGRADATION.get(m)
        deg.add(_title(m) + (f" (study: {ref[0]})" if ref and ref[0] != _title(m) else ""),
                get("mnist_cnn", m, "accuracy"), ref[1] if ref else None,
                get("cifar_vgg", m, "accuracy"), ref[2] if ref else None,
                *([get("mnist_cnn", m, "accuracy_fill_alt"), get("cifar_vgg", m, "accuracy_fill_alt")]
                  if alt_cols else []))
    first = {k: next(iter(v.values())) for k, v in rows.items() if v}
    deg.add("(no degradation)", first.get("mnist_cnn", {}).get("accuracy_original"), None,
            first.get("cifar_vgg", {}).get("accuracy_original"), None,
            *([first.get("mnist_cnn", {}).get("accuracy_original"),
               first.get("cifar_vgg", {}).get("accuracy_original")] if alt_cols else []))
    n_m = first.get("mnist_cnn", {}).get("images")
    n_c = first.get("cifar_vgg", {}).get("images")
    deg.note = (f"Accuracy after keeping the top {p['keep']:.0%} of pixels by map value (the rest set to "
                f"{p['fill']}), first {n_m} MNIST and {n_c} CIFAR-10 test images of the data directory "
                "(study: the first 1,000 of the official test sets). Both LRP rules are shown beside the "
                "study's single LRP value. 'random map' = pixels kept at random: the chance level of the test. "
                + (f"The '{alt}' columns: the same maps, removed pixels black or white at random (the study's "
                   "README names 0, 255 or salt and pepper). On MNIST a fill of 0 is the background itself, so "
                   "keeping the top 20% keeps most of the digit and accuracy stays high. " if alt_cols else "")
                + "Our models are trained on the offline subsets (MNIST 8,000 images, CIFAR-10 2,000) with the "
                "zoo's quick schedules; the study's VGG reached 0.935 after 250 epochs on 50,000 images. "
                + ("LIME and Kernel SHAP: the lime and shap libraries (surrogates=lib)."
                   if str(p.get("surrogates", "native")) == "lib" else
                   "LIME and Kernel SHAP: xaitf's native batched programs (--set mnist_cifar.surrogates=lib "
                   "runs the lime and shap libraries instead)."))
    acc = C.Table(["model", "held-out accuracy (ours)", "study", "training"])
    ref_acc = {"mnist_cnn": 0.9917, "cifar_vgg": 0.935, "bayesian_mlp": REF_BAYES["model_average_accuracy"]}
    for key, info in list(r["models"].items()) + [("bayesian_mlp", r["bayesian"]["model"])]:
        acc.add(key, info.get("test_accuracy"), ref_acc[key], info["note"])
    b = r["bayesian"]["refusal"]
    bay = C.Table(["quantity", "ours", "study"])
    bay.add("test digits skipped", f"{b['skipped']} / {b['test_images']} ({b['skipped_fraction']:.1%})",
            f"{REF_BAYES['skipped']} / {REF_BAYES['of']} ({REF_BAYES['skipped'] / REF_BAYES['of']:.1%})")
    bay.add("accuracy on the rest", b["accuracy_on_rest"], REF_BAYES["accuracy_on_rest"])
    bay.add("model-average accuracy (10 networks)", b["model_average_accuracy"], REF_BAYES["model_average_accuracy"])
    bay.add("uniform noise refused", f"{b['noise_refused']} / {b['noise_images']}", "100 / 100")
    s = r["bayesian"]["saliency"]
    sal = C.Table(["images", "probability of the predicted class", "prediction kept", "refused"])
    sal.add("original", s["confidence_original"], 1.0, None)
    sal.add("top-20% salient pixels -> noise", s["confidence_important_noised"], s["kept_prediction_important"],
            s["refused_important"])
    sal.add("random 20% pixels -> noise", s["confidence_random_noised"], s["kept_prediction_random"],
            s["refused_random"])
    sal.note = (f"{s['images']} test digits, {s['samples']} sampled networks for the saliency; probabilities are "
                "the 10-network model average; refusal with the 100-network rule. Median per-pixel "
                f"std / |mean| of the gradients: {s['median_std_over_abs_mean']:.3g}.")
    figs = r["figures"]
    orig_rows = r.get("degradation_original", {}).get("mnist_cnn")
    letters = b.get("notmnist")
    if letters:
        bay.add(f"{letters['label']} letters refused" + ("" if letters["synthetic"] else " (real notMNIST file)"),
                f"{letters['refused']} / {letters['images']}",
                f"{REF_BAYES['notmnist'][0]} / {REF_BAYES['notmnist'][1]} (notMNIST)")
    bay.note = _letters_note(letters, b)
    pre = [f"Command: `{r['command']}` ({'quick' if quick else 'full'} run, seed {r['seed']}, {r['seconds']:.0f} s)."]
    if quick:
        pre.append("QUICK run: short training, few images and samples (see results.json 'settings'); a smoke "
                   "test, not a reproduction.")
    pre.append(f"Degradation mode: {p.get('degradation_mode', 'both')} (corrected = xaitf's pipeline; original = "
               "the study's three MNIST notebooks replayed; "
               "--set mnist_cifar.degradation_mode=corrected|original|both).")
    has_corrected = any(rows.get(k) for k in rows)
    sections = [
        ("Models", acc),
        *([("Degradation test", deg)] if has_corrected else []),
        *([("Degradation: the original notebooks replayed (MNIST)", original_section(orig_rows, figs, folder, quick))]
          if orig_rows is not None else []),
        ("Maps", ["LIME: superpixel weights (quickshift sized for 28/32 px) for the probability of the predicted "
                  f"class, {p['lime_samples']} samples; Kernel SHAP: SLIC 50/30/3, {p['shap_nsamples']} samples, "
                  "removed segments = 0; gradient/LRP family: the predicted class's logit.",
                  *[C.image_link(v, folder) for k, v in figs.items() if k.startswith(("compare_", "all_methods_"))]]),
        ("Methods not run", [f"- {key}: {m}: {err}" for key, fails in r.get("failed", {}).items()
                             for m, err in fails.items()] or ["Every method ran."]),
        ("Bayesian MLP: refusal", [bay, C.image_link(figs["bayes_refusal"], folder),
                                   *([C.image_link(figs["bayes_notmnist"], folder)] if "bayes_notmnist" in figs
                                     else [])]),
        ("Bayesian MLP: saliency and its uncertainty", [sal, C.image_link(figs["bayes_saliency"], folder)]),
    ]
    C.write_report(folder, "Study 4: LIME / Kernel SHAP / LRP on MNIST and CIFAR-10, degradation, Bayesian MLP",
                   sections, pre)


def _letters_note(letters, digits=None):
    """The report's note under the refusal table: where the letters came from, and what was measured
    about the ones the rule let through."""
    if not letters:
        return None
    if letters["synthetic"]:
        text = (f"Letters: {letters['label']}, {letters['images']} letters A-J rendered from matplotlib's DejaVu "
                "fonts (xaitf.data.synthetic_notmnist; seeded size, position and stroke jitter), because the data "
                "directory has no notmnist.npz. It is NOT notMNIST: the study's 395 / 399 was measured on real "
                "notMNIST letters (thousands of fonts), so the two numbers are not the same measurement.")
    else:
        text = f"Letters: real notMNIST from {letters['source']}."
    acc = letters.get("accepted_predictions") or {}
    if acc:
        top = sorted(acc.items(), key=lambda kv: -kv[1])[:4]
        text += (" Accepted letters were read as the digits " + ", ".join(f"{k} ({v})" for k, v in top) + ".")
    per = letters.get("refused_per_letter")
    if per:
        text += " Refused per letter: " + ", ".join(f"{k} {v}" for k, v in per.items()) + "."
    if digits and digits.get("skipped_fraction") is not None:
        text += (f" For scale: this network refuses {digits['skipped_fraction']:.1%} of the test digits, the study's "
                 f"{REF_BAYES['skipped'] / REF_BAYES['of']:.1%}: ours is the less uncertain of the two overall.")
    return text


def replay_reason(row):
    """One measured sentence on why a notebook replay lands where it does (for the report)."""
    parts = []
    if row["key"] == "lrp":
        parts.append(f"{row['kept_pixels_mean']:.1f} of {row['intended_pixels']} intended pixels are kept "
                     f"(divmod(i, 28) on the 28x28x3 array), {row['kept_on_ink']:.0%} of them on the digit, "
                     f"{row['ink_kept']:.0%} of the digit's ink kept; the same Input ranking with each pixel where "
                     f"it belongs keeps {row.get('fixed_indexing_kept_mean', 0):.0f} pixels "
                     f"({row.get('fixed_indexing_ink_kept', 0):.0%} of the ink) and scores "
                     f"{fmt_acc(row.get('fixed_indexing_accuracy'))}")
    elif row["key"] == "lime":
        corr = row.get("corrected_ink_kept", {}).get("lime")
        parts.append(f"lime's default quickshift makes {row['segments_mean']:.1f} segments per image here "
                     f"({row['segments_min']}-{row['segments_max']}; "
                     f"{row['single_segment_fraction']:.0%} one segment), "
                     f"so the 156 pixels are mostly a tie-broken part of one big segment: {row['ink_kept']:.0%} of the "
                     "digit's ink kept" + (f" ({corr:.0%} with the corrected LIME map)" if corr is not None else ""))
    else:
        corr = row.get("corrected_ink_kept", {}).get("shap")
        parts.append(f"with removed segments at 255, one removed segment alone changes the CNN's prediction in "
                     f"{row.get('one_segment_255_changes_prediction', float('nan')):.0%} of (image, segment) pairs "
                     f"(the all-255 image is class {row.get('all_255_class')}, p = "
                     f"{row.get('all_255_probability', float('nan')):.2f}), so nearly every coalition scores about 0 "
                     f"for the explained class and the values order segments by small differences: "
                     f"{row['ink_kept']:.0%} of the digit's ink kept"
                     + (f" ({corr:.0%} with the corrected Kernel SHAP map)" if corr is not None else ""))
    parts.append(f"the CNN predicts class {row['majority_class']} for {row['majority_share']:.0%} of the "
                 "degraded images")
    if row.get("accuracy_undegraded") is not None and row["accuracy_undegraded"] < 0.9:
        parts.append(f"and scores only {row['accuracy_undegraded']:.3f} on these images undegraded (a weakly "
                     "trained model: the comparison with the paper says little)")
    return "; ".join(parts) + "."


def fmt_acc(v):
    return "-" if v is None else f"{v:.3f}"


def original_section(rows, figs, folder, quick):
    """Report items of the notebook replays: the table, one measured line per notebook, the figure."""
    t = C.Table(["notebook (study's name)", "replay: map and quirk", "ours: replay", "study (paper)",
                 "ours: corrected pipeline", "replay - paper"])
    lines = []
    for row in rows:
        corr = ", ".join(f"{_title(m)} {fmt_acc(v)}" for m, v in row["corrected"].items() if v is not None) or "-"
        diff = row["accuracy"] - row["paper"]
        t.add(row["study_name"], row["title"], row["accuracy"], row["paper"], corr, f"{diff:+.3f}")
        verdict = ("within 0.1 of the paper" if abs(diff) <= 0.1 else
                   f"{abs(diff):.3f} from the paper; measured reason")
        lines.append(f"- **{row['study_name']}** ({verdict}): {replay_reason(row)}")
    n = rows[0]["images"] if rows else 0
    t.note = (f"First {n} MNIST test images of the data directory (study: the first 1,000 of the official test set). "
              "Each replay ranks pixels by its notebook's map with the notebooks' own selection "
              "(bottleneck's argpartition order, written out in notebook_select) and indexing "
              "(divmod(i, map.shape[1])), keeps int(0.2 * 784) = 156 intended pixels and sets the rest to 0 "
              "(all three notebooks: the salt-and-pepper line is commented out). 'corrected pipeline' = the "
              "'Degradation test' table above (xaitf.metrics.degradation, top 157 pixels by map value, fill 0). "
              "The Kernel SHAP replay explains the predicted class (an assumption: the notebook's cell that picks "
              "the class could not be read)."
              + (" QUICK run: a handful of images; the numbers are noisy." if quick else ""))
    out = [t, "Why each replay lands where it does (measured in this run):", *lines]
    if "degradation_original_mnist_cnn" in figs:
        out.append(C.image_link(figs["degradation_original_mnist_cnn"], folder))
    return out
