"""Heatmap figures: study 1's layout (one column per method, optional centre-crop row).

``heatmap_figure(image, maps, info)`` draws

* row 1: the input (gray, or colour for RGB models) and each method's full-size map;
* row 2 (``crop=True``): the centre 5x5 crop ``[c-2:c+3]`` of every panel (c = H//2, W//2),
  coloured with the full map's limits and annotated with its values;
* maps in a diverging blue/white/red map symmetric around 0 (limits +-M, M = max|a|), a colour
  bar with ticks [-M, 0, M], titles ``name`` / ``max M / min m``;
* left: true label (when known), predicted class, explained neuron and its probability;
  right: the top-5 classes with probabilities;
* more than ``max_cols`` (9) panels wrap into bands (same order, left to right, top to bottom),
  so a figure with every method stays readable at 100%.

Maps are z-scored, ``(a - mean) / (std + 1e-15)``, except Input, LIME and Kernel SHAP
(``settings.GLOBAL["zscore"]`` switches it off). The figure is a plain ``matplotlib.figure.Figure``
(no pyplot state, no display needed); :func:`save_figure` writes it atomically.
"""
import textwrap

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from . import settings as S

DIVERGING = "RdBu_r"     # blue (negative) / white (0) / red (positive)
EPS = 1e-15
RAW_TITLES = frozenset({"Input", "LIME", "Kernel SHAP"})   # never z-scored (study 1)
CROP = 5

# layout, in inches
_PANEL = 1.65            # image box (square)
_COL = 2.45              # column pitch: image + colour bar + its tick labels
_CBAR_W, _CBAR_PAD = 0.10, 0.06
_TITLE_H = 0.52
_ROW_GAP = 0.30
_LEFT, _RIGHT = 1.85, 1.75
_TOP, _BOTTOM = 0.45, 0.15
_BAND_GAP = 0.35         # between bands when many panels wrap


def zscore(a):
    """``(a - mean(a)) / (std(a) + 1e-15)`` over all finite entries (float64)."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return a
    mean = a[finite].mean()
    std = a[finite].std()
    return (a - mean) / (std + EPS)


def symmetric_limits(a):
    """``(-M, M)`` with ``M = max|a|`` over finite entries; ``(-1, 1)`` for an all-zero map."""
    a = np.asarray(a, dtype=np.float64)
    finite = a[np.isfinite(a)]
    m = float(np.abs(finite).max()) if finite.size else 0.0
    if m == 0.0:
        m = 1.0
    return -m, m


def centre(shape):
    """(row, col) of the centre pixel of an (H, W, ...) array: (H // 2, W // 2)."""
    return int(shape[0]) // 2, int(shape[1]) // 2


def crop_slices(shape, size=CROP):
    """Slices of the centre ``size x size`` crop: ``[c-2:c+3]`` for size 5 (clipped to the image)."""
    r, c = centre(shape)
    h = size // 2
    rows = slice(max(r - h, 0), min(r - h + size, int(shape[0])))
    cols = slice(max(c - h, 0), min(c - h + size, int(shape[1])))
    return rows, cols


def centre_crop(a, size=CROP):
    rows, cols = crop_slices(np.shape(a), size)
    return np.asarray(a)[rows, cols]


def as_map(a):
    """A 2-D map from (H,W), (H,W,1), (1,H,W) or per-channel (H,W,C) (channels summed)."""
    a = np.asarray(a, dtype=np.float64)
    a = np.squeeze(a)
    if a.ndim == 3:
        a = a.sum(-1)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {np.shape(a)}")
    return a


def should_zscore(title, zscore_setting=None):
    """Whether a panel is z-scored: ``zscore_setting`` True/False/collection of titles, or None
    for the study-1 rule (settings GLOBAL["zscore"], never Input, LIME, Kernel SHAP)."""
    if zscore_setting is None:
        return bool(S.GLOBAL.get("zscore", True)) and title not in RAW_TITLES
    if isinstance(zscore_setting, bool):
        return zscore_setting and title != "Input"
    return title in set(zscore_setting)


def _fmt(v, digits=4):
    if v is None:
        return "?"
    if not np.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def _cell(v):
    """Compact value for a crop cell (at most ~5 characters)."""
    if not np.isfinite(v):
        return "nan"
    av = abs(v)
    if av == 0:
        return "0"
    if av >= 1000 or av < 0.01:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    if av >= 100:
        return f"{v:.0f}"
    if av >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _input_display(image):
    """(array, imshow kwargs) showing the model input: gray for 1 channel, RGB for 3."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    if img.ndim == 2:
        vmin, vmax = (0.0, 1.0) if lo >= 0 and hi <= 1 else (0.0, 255.0) if lo >= 0 and hi <= 255 else (lo, hi)
        if vmin == vmax:
            vmax = vmin + 1
        return img, {"cmap": "gray", "vmin": vmin, "vmax": vmax}
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        if lo >= 0 and hi <= 1:
            shown = img
        elif lo >= 0 and hi <= 255:
            shown = img / 255.0
        else:
            shown = (img - lo) / (hi - lo if hi > lo else 1.0)
        return np.clip(shown, 0, 1), {}
    # other channel counts: show the channel mean in gray
    mean = img.mean(-1) if img.ndim == 3 else np.squeeze(img)
    return mean, {"cmap": "gray"}


def _label(cls, names):
    if cls is None:
        return "?"
    cls = int(cls)
    if names is not None and 0 <= cls < len(names):
        return f"{cls} ({names[cls]})"
    return str(cls)


def _info_text(info):
    names = info.get("class_names")
    lines = []
    if "true" in info:
        lines.append(("true label", _label(info["true"], names) if info["true"] is not None else "unknown"))
    lines.append(("predicted", _label(info.get("predicted"), names)))
    lines.append(("explained neuron", _label(info.get("target"), names)))
    p = info.get("probability")
    lines.append(("its probability", "?" if p is None else f"{p:.5g}"))
    left = "\n".join(f"{k}:\n  {v}" for k, v in lines)
    top = info.get("top5") or []
    right = "top-5 (prob. class)\n" + "\n".join(f"{p:<11.5g} {_label(c, names)}" for c, p in top)
    return left, right


def heatmap_figure(image, maps, info=None, crop=False, zscore_maps=None, dpi=110, header=None,
                   max_cols=9):
    """Study 1's figure: input and maps in a row, optional centre-crop row, labels left and right.

    Args:
        image: the model input (H,W), (H,W,1) gray or (H,W,3) RGB, as fed to the model (0..1).
        maps: ``{title: (H,W) map}`` in column order (raw maps; z-scoring happens here).
        info: dict with ``predicted``, ``target``, ``probability``, ``top5`` ([(class, p)] x5),
            optional ``true`` (None = unknown) and ``class_names``.
        crop: add the centre 5x5 crop row.
        zscore_maps: None (study-1 rule, see :func:`should_zscore`), True/False, or titles.
        dpi: resolution of the saved figure.
        header: optional one-line text above the panels (model, explained output).
        max_cols: more panels than this are wrapped into bands of equal width (each band with its
            own crop row), read left to right, top to bottom; None keeps one row.

    Returns:
        A ``matplotlib.figure.Figure`` (save it with :func:`save_figure`).
    """
    info = dict(info or {})
    panels = [("Input", None)] + [(t, as_map(a)) for t, a in maps.items()]
    n = len(panels)
    bands = 1 if not max_cols else -(-n // int(max_cols))
    ncols = -(-n // bands)
    rows = 2 if crop else 1
    row_h = _TITLE_H + _PANEL
    band_h = rows * row_h + (rows - 1) * _ROW_GAP + _BAND_GAP
    left, right = _info_text(info)
    right_w = max(_RIGHT, 0.5 + 0.078 * max(len(line) for line in right.splitlines()))
    top_m = _TOP if header else _TOP - 0.2
    width = _LEFT + ncols * _COL + right_w
    height = top_m + bands * band_h - _BAND_GAP + _BOTTOM
    fig = Figure(figsize=(width, height), dpi=dpi)

    def box(x_in, y_top_in, w_in, h_in):
        """Axes rectangle from inches measured from the left and from the top."""
        return [x_in / width, 1 - (y_top_in + h_in) / height, w_in / width, h_in / height]

    title_fs = 9
    for j, (title, a) in enumerate(panels):
        band, col = divmod(j, ncols)
        x0 = _LEFT + col * _COL
        y_band = top_m + band * band_h
        y_img = y_band + _TITLE_H
        ax = fig.add_axes(box(x0, y_img, _PANEL, _PANEL))
        ax.set_xticks([])
        ax.set_yticks([])
        cax = fig.add_axes(box(x0 + _PANEL + _CBAR_PAD, y_img, _CBAR_W, _PANEL))
        name = "\n".join(textwrap.wrap(title, 24)[:2])
        if a is None:
            shown, kw = _input_display(image)
            im = ax.imshow(shown, interpolation="nearest", **kw)
            full = shown
            if kw.get("cmap") == "gray":
                cb = fig.colorbar(im, cax=cax, ticks=[kw["vmin"], kw["vmax"]])
                cb.ax.tick_params(labelsize=7)
            else:
                cax.set_axis_off()
        else:
            full = zscore(a) if should_zscore(title, zscore_maps) else a
            limits = symmetric_limits(full)
            im = ax.imshow(full, cmap=DIVERGING, vmin=limits[0], vmax=limits[1], interpolation="nearest")
            m = limits[1]
            cb = fig.colorbar(im, cax=cax, ticks=[-m, 0, m])
            cb.ax.set_yticklabels([_fmt(-m, 3), "0", _fmt(m, 3)])
            cb.ax.tick_params(labelsize=7)
        lo, hi = float(np.nanmin(full)), float(np.nanmax(full))
        ax.set_title(f"{name}\nmax {_fmt(hi)} / min {_fmt(lo)}", fontsize=title_fs, pad=4)
        if crop:
            rs, cs = crop_slices(np.shape(full))
            # outline of the crop on the full panel
            from matplotlib.patches import Rectangle

            ax.add_patch(Rectangle((cs.start - 0.5, rs.start - 0.5), cs.stop - cs.start, rs.stop - rs.start,
                                   fill=False, edgecolor="lime" if a is None else "black", linewidth=0.8))
            y_crop = y_band + row_h + _ROW_GAP + _TITLE_H
            cx = fig.add_axes(box(x0, y_crop, _PANEL, _PANEL))
            cx.set_xticks([])
            cx.set_yticks([])
            if a is None:
                shown, kw = _input_display(image)
                part = shown[rs, cs]
                cx.imshow(part, interpolation="nearest", **kw)
                if part.ndim == 2:       # gray: annotate the pixel values (0..255 if shown as 0..1)
                    lo_, hi_ = kw["vmin"], kw["vmax"]
                    for (i, k), v in np.ndenumerate(part):
                        text = f"{v * 255:.0f}" if hi_ == 1.0 else _cell(v)
                        cx.text(k, i, text, ha="center", va="center", fontsize=6.5,
                                color="white" if (v - lo_) / (hi_ - lo_) < 0.5 else "black")
            else:
                part = full[rs, cs]
                cx.imshow(part, cmap=DIVERGING, vmin=limits[0], vmax=limits[1], interpolation="nearest")
                norm = mcolors.Normalize(limits[0], limits[1])
                for (i, k), v in np.ndenumerate(part):
                    cx.text(k, i, _cell(v), ha="center", va="center", fontsize=6.5,
                            color="white" if abs(norm(v) - 0.5) > 0.3 else "black")
            r, c = centre(np.shape(full))
            if a is None and kw.get("vmax") == 1.0:
                value = f"{float(full[r, c]) * 255:.0f}/255"
            elif full.ndim == 2:
                value = _fmt(float(full[r, c]))
            else:
                value = ", ".join(f"{v:.3g}" for v in np.asarray(image, dtype=np.float64)[r, c])
            cx.set_title(f"centre crop [{rs.start}:{rs.stop}, {cs.start}:{cs.stop}]\ncentre ({r},{c}) = {value}",
                         fontsize=8, pad=3)

    y_mid = 1 - (top_m + _TITLE_H + _PANEL / 2) / height
    fig.text(0.12 / width, y_mid, left, ha="left", va="center", fontsize=9, linespacing=1.35)
    fig.text((width - right_w + 0.35) / width, y_mid, right, ha="left", va="center", fontsize=9,
             family="monospace", linespacing=1.35)
    if header:
        fig.text(0.12 / width, 1 - 0.12 / height, header, ha="left", va="top", fontsize=9, color="0.25")
    return fig


def save_figure(fig, path, overwrite=False):
    """Save ``fig`` atomically (temp file + rename); returns the path written.

    With ``overwrite=False`` an existing file is never replaced: ``<stem>_1.png`` etc. is used.
    """
    from .cli import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=fig.dpi, facecolor="white",
                                                             bbox_inches="tight", pad_inches=0.15),
                        overwrite=overwrite)


def randomisation_steps(count, max_steps):
    """Indices of the randomisation steps a figure shows: all ``count`` when they fit in
    ``max_steps``, else ``max_steps`` evenly spaced ones, the first and the last included."""
    if count <= max_steps:
        return list(range(count))
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, max_steps)})


def randomisation_figure(results, image_index=0, title=None, dpi=110, max_steps=15):
    """The sanity-check figure (Adebayo et al. 2018, fig. 2): one row per method, the original
    map then the maps after each cascading randomisation step (top layer first), |map| / max of
    image ``image_index``; under each panel the mean Spearman similarity to the original over all
    images of the result.

    Args:
        results: ``{label: Randomisation}`` of
            :func:`xaitf.metrics.randomisation.model_parameter_randomisation` run with
            ``return_maps`` (True, or the number of images kept); each panel is labelled with the
            mean Spearman similarity (or the first similarity computed when Spearman is not).
        max_steps: at most this many randomisation steps are shown (15): a ResNet50's 53 steps in
            one row are panels too small to read; with more, evenly spaced steps, the first and the
            last included (:func:`randomisation_steps`), and the title says how many.

    Returns:
        a :class:`matplotlib.figure.Figure` (:func:`save_figure` writes it).
    """
    rows = list(results.items())
    layers = rows[0][1].layers
    steps = randomisation_steps(len(layers), max(2, int(max_steps)))
    cols = len(steps) + 1
    head = 0.75 + (0.25 if len(steps) < len(layers) else 0.0)      # inches above the panels
    height = 1.45 * len(rows) + head + 0.25
    fig = Figure(figsize=(1.35 * cols + 1.9, height), dpi=dpi)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    im = None
    for r, (label, res) in enumerate(rows):
        panels = [res.original[image_index]] + [res.maps[k][image_index] for k in steps]
        for c, m in enumerate(panels):
            a = np.abs(np.asarray(m, np.float64))
            top = a.max()
            ax = axes[r, c]
            im = ax.imshow(a / top if top > 0 else a, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"{steps[c - 1] + 1}: + {layers[steps[c - 1]]}",
                             fontsize=7, rotation=20)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            else:
                sim = "spearman" if "spearman" in res.scores else next(iter(res.scores))
                rho = float(np.mean(res.scores[sim][steps[c - 1]]))
                ax.set_xlabel(f"{'ρ' if sim == 'spearman' else sim} {rho:.2f}", fontsize=7, labelpad=2)
    title = title or "Cascading model parameter randomisation (top layer first)"
    if len(steps) < len(layers):
        title += f"\n{len(steps)} of the {len(layers)} steps shown (step k: the top k layers randomised)"
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.86, top=1 - head / height, bottom=0.05,
                        wspace=0.08, hspace=0.35)
    cax = fig.add_axes([0.89, 0.15, 0.018, 0.6])
    fig.colorbar(im, cax=cax, label="|relevance| / max")
    return fig
