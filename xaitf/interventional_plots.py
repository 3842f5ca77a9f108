"""Figures of study 2 (interventional explanations): the causal graph and its stability.

* :func:`graph_figure`: one column per layer (input side on the left, the target on the right),
  the kept units as numbered nodes, and an edge from every kept parent of a layer to every unit
  of its effect set.
* :func:`stability_curve_figure`: mean node appearance rate (%) vs beta, with the spread over
  nodes and, optionally, a second protocol's curve and the study's published curve.
* :func:`stability_hist_figure`: per beta bin (default width 0.1), the histogram of node
  appearance frequencies.

All return a plain ``matplotlib.figure.Figure`` (no pyplot state); :func:`save` writes a PNG.
"""
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

# study 2's reported mean node appearance rates (%), MNIST class 3 (seeds.md)
STUDY2_STABILITY = {0.0: 96.9, 0.01: 82.7, 0.1: 51.0, 0.2: 27.0, 0.5: 15.5}

_COLORS = ["#4C72B0", "#55A868", "#8172B2", "#CCB974", "#64B5CD", "#DD8452", "#937860"]
_TARGET = "#C44E52"


def _layer_sizes(model):
    if model is None:
        return {}
    from .methods.interventional import Chain

    chain = model if isinstance(model, Chain) else Chain(model)
    return {chain.entries[k].name: chain.units(k) for k in chain.weights}


def graph_figure(graph, model=None, title=None, dpi=110, max_label_nodes=60):
    """Draw a :class:`~xaitf.methods.interventional.CausalGraph`.

    Args:
        graph: the learned graph.
        model: optional; when given, column headers show kept/total units.
        title: figure title (default: model name and target class).
        max_label_nodes: columns with more nodes than this get no numbers inside the nodes.
    """
    nodes = graph.nodes()
    cols = list(nodes)
    sizes = _layer_sizes(model)
    tallest = max([len(v) for v in nodes.values()] + [1])
    pitch = 0.30 if tallest <= 40 else max(0.08, 12.0 / tallest)
    height = max(3.2, tallest * pitch + 1.6)
    width = max(4.0, 2.1 * len(cols) + 0.8)
    fig = Figure(figsize=(width, height), dpi=dpi)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.86])
    pos = {}
    for c, name in enumerate(cols):
        units = nodes[name]
        y0 = (len(units) - 1) / 2.0
        for r, u in enumerate(units):
            pos[(name, u)] = (c, (y0 - r) * pitch)
    segs = []
    for lk in graph.links:
        for p in lk.parents:
            for e in lk.effects:
                if (lk.parent, p) in pos and (lk.layer, e) in pos:
                    segs.append([pos[(lk.parent, p)], pos[(lk.layer, e)]])
    if segs:
        alpha = float(np.clip(40.0 / len(segs), 0.08, 0.6))
        ax.add_collection(LineCollection(segs, colors="#555555", linewidths=0.7, alpha=alpha, zorder=1))
    radius = 260 if pitch >= 0.3 else max(20, 260 * (pitch / 0.3) ** 2)
    top = tallest * pitch / 2.0
    for c, name in enumerate(cols):
        units = nodes[name]
        last = c == len(cols) - 1
        color = _TARGET if last else _COLORS[c % len(_COLORS)]
        xy = np.array([pos[(name, u)] for u in units]).reshape(-1, 2)
        if len(xy):
            ax.scatter(xy[:, 0], xy[:, 1], s=radius, c=color, edgecolors="white", linewidths=0.8,
                       zorder=2)
        if len(units) <= max_label_nodes:
            for u, (px, py) in zip(units, xy):
                ax.text(px, py, str(u), ha="center", va="center", fontsize=6.5 if u < 100 else 5.5,
                        color="white", fontweight="bold", zorder=3)
        kept = f"{len(units)}" + (f" of {sizes[name]}" if name in sizes else "")
        label = f"{name}\n{kept} kept" if not last else f"{name}\ntarget class {graph.target}"
        ax.text(c, top + 0.25, label, ha="center", va="bottom", fontsize=9)
        if not units:
            ax.text(c, 0, "none", ha="center", va="center", fontsize=8, color="#888888")
    ax.set_xlim(-0.6, len(cols) - 0.4)
    ax.set_ylim(-top - 0.3, top + 0.8)
    ax.axis("off")
    fig.suptitle(title or f"Causal graph of class {graph.target}" +
                 (f" ({graph.model})" if graph.model else ""), fontsize=11)
    return fig


_PROTOCOL_WORDS = {
    "original": "original protocol: fresh random images, one u per repeat",
    "fixed": "fixed protocol: same images, u per weight",
}


def _protocol_label(result):
    proto = result.get("protocol")
    return f"xaitf, {_PROTOCOL_WORDS.get(proto, proto)}" if proto else "xaitf"


def stability_curve_figure(result, reference=None, compare=None, dpi=110):
    """Mean node appearance rate (%) vs beta (``result`` from ``graph_stability``).

    The band shows the 25-75% range of the per-node rates of ``result``; ``compare`` (another
    ``graph_stability`` result, e.g. the other protocol) is drawn dashed beside it, and
    ``reference`` ({beta: percent}, e.g. :data:`STUDY2_STABILITY`) as the study's published curve
    (its points joined by a line).
    """
    betas, rates = np.asarray(result["betas"]), 100.0 * np.asarray(result["rates"], float)
    fig = Figure(figsize=(7.2, 5.0), dpi=dpi)
    ax = fig.add_subplot(111)
    if rates.ndim == 2 and rates.shape[1]:
        lo, hi = np.percentile(rates, 25, axis=1), np.percentile(rates, 75, axis=1)
        ax.fill_between(betas, lo, hi, color="#4C72B0", alpha=0.18, lw=0,
                        label="xaitf: 25-75% of the nodes' rates")
    ax.plot(betas, result["mean_rate"], "o-", color="#4C72B0", ms=3.5, lw=1.6,
            label=_protocol_label(result))
    if compare is not None:
        ax.plot(np.asarray(compare["betas"]), compare["mean_rate"], "s--", color="#55A868", ms=3,
                lw=1.2, alpha=0.9, label=_protocol_label(compare))
    if reference:
        rb = sorted(reference)
        ax.plot(rb, [reference[b] for b in rb], "x-", color=_TARGET, ms=7, mew=2, lw=1.2,
                label="study 2 as published (its LeNet)")
    ax.set_xlabel("beta (interventions of size u ~ U(0, beta))")
    ax.set_ylabel("mean node appearance rate (%)")
    ax.set_ylim(-2, 104)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    used = result.get("n_used")
    pool = result.get("n_eligible")
    images = (f", {used} of {pool} images per repeat" if used is not None and pool is not None
              else "")
    ax.set_title(f"Graph stability: layer {result['layer']}, class {result['target']}, "
                 f"{len(result['nodes'])} nodes, {result['repeats']} repeats{images}", fontsize=9.5)
    fig.tight_layout()
    return fig


def stability_hist_figure(result, bin_width=0.1, dpi=110):
    """Histograms of node appearance frequency, one panel per beta bin of ``bin_width``."""
    betas, rates, reps = np.asarray(result["betas"]), np.asarray(result["rates"], float), result["repeats"]
    top = float(betas.max()) if len(betas) else 0.0
    n_bins = max(1, int(np.ceil(top / bin_width - 1e-9)))
    edges = [(i * bin_width, (i + 1) * bin_width) for i in range(n_bins)]
    fig = Figure(figsize=(2.3 * n_bins + 0.6, 2.9), dpi=dpi)
    axes = fig.subplots(1, n_bins, sharey=True, squeeze=False)[0]
    hist_edges = (np.arange(reps + 2) - 0.5) / reps
    for i, (a, b) in enumerate(edges):
        last = i == n_bins - 1
        inside = (betas >= a - 1e-9) & ((betas <= b + 1e-9) if last else (betas < b - 1e-9))
        vals = rates[inside].ravel()
        ax = axes[i]
        if vals.size:
            w = np.full(vals.size, 100.0 / vals.size)
            ax.hist(vals, bins=hist_edges, weights=w, color="#4C72B0", edgecolor="white")
        ax.set_title(f"beta {a:.2f}-{b:.2f}" + ("" if vals.size else " (empty)"), fontsize=9)
        ax.set_xlabel("appearance frequency")
        ax.set_xlim(-0.06, 1.06)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("% of (node, beta)")
    proto = result.get("protocol")
    fig.suptitle(f"Node appearance per beta bin: layer {result['layer']}, class {result['target']}"
                 + (f" ({proto} protocol)" if proto else ""), fontsize=10)
    fig.tight_layout()
    return fig


def save(fig, path):
    """Write ``fig`` as a PNG (parent folders created); returns the path."""
    import os

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, facecolor="white", bbox_inches="tight", pad_inches=0.1)
    return path
