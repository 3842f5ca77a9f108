"""Native LRP and Deep Taylor: relevance propagation on xaitf's own model graph (:mod:`xaitf.graph`).

Layer-wise relevance propagation (Bach et al. 2015, PLoS ONE 10(7)), Deep Taylor decomposition
(Montavon et al. 2017, Pattern Recognition 65) and the LRP composites of Kohlbrenner et al. 2020
(IJCNN) run as one batched ``tf.function`` per (model, composite) on tf-keras and Keras 3 models
alike, without iNNvestigate or a graph-mode twin. The model is read once into a graph, its final
softmax stripped and its BatchNormalization layers folded into the layer before them
(``batchnorm=False`` keeps them as affine layers with their own rule). On models without
BatchNormalization the iNNvestigate composites (``lrp.z``, ``lrp.epsilon``,
``lrp.alpha_1_beta_0``, ``lrp.alpha_2_beta_1``, ``deep_taylor``, ``deep_taylor.bounded``) give
iNNvestigate 2.1.2's maps (tests/test_lrp_native.py), starting, like it, from the value of the
target logit ``f_c``.
"""
import warnings

import numpy as np

from ..errors import InputError, MethodError, ModelError
from ..explainer import Explainer, _caller_stacklevel
from ..graph import composites as C
from ..graph.engine import propagator


class LRP(Explainer):
    """Layer-wise relevance propagation with a composite of rules (per-channel maps).

    Args:
        model: tf-keras or Keras 3 image classifier of the layers :mod:`xaitf.graph.ir` reads.
        composite: a name of :data:`xaitf.graph.composites.COMPOSITES` (``"epsilon"`` is
            ``"lrp.epsilon"``; also ``"lrp.z"``, ``"lrp.alpha_2_beta_1"``, ``"deep_taylor"``,
            ``"epsilon_plus_flat"``, ...) or a dict ``{selector: rule}`` (see
            :mod:`xaitf.graph.composites`) ("epsilon").
        epsilon: stabiliser of the epsilon rules, >= 0 (None: the composite's own, 1.0 for
            lrp.epsilon, 0.1 for the sequential presets, 1e-6 for the epsilon_* composites).
        gamma: the gamma rule's weight of positive parameters, >= 0 (None: 0.25).
        alpha: alpha of the ``alpha_beta`` rule, >= 0 (None: 2.0).
        beta: beta of the ``alpha_beta`` rule, >= 0 (None: 1.0).
        low: lower input bound of the z^B rule (``deep_taylor.bounded``, ``epsilon_gamma_box``): a
            number or one per channel (None: 0.0).
        high: upper input bound of the z^B rule, > low (None: 1.0).
        batchnorm: fold BatchNormalization into the layer before it (True).
        affine_layers: names or class names of custom layers (or Keras 3 operations) that compute
            ``A x + b`` of their one input, which native LRP cannot read through their call (an
            operation it does not read: a class token made with ``keras.ops.repeat``, a
            ``keras.ops.flip``) (()). Each is called as it is and
            takes the selector ``custom`` (default rule ``proportional``: the z rule of its map
            through its own gradient, with the composite's epsilon); reading checks on a probe
            input that it is affine.
        **common: batch_size, channel_reduce, seed, progress, output (only "logits") (see
            :class:`xaitf.explainer.Explainer`).

    A parameter the composite's rules do not read (``gamma=0.5`` with ``lrp.z``) raises
    MethodError, as do unknown composites, selectors and rules (one line listing the valid ones).
    """

    outputs = ("logits",)
    shared_sections = ("lrp_graph",)    # affine_layers, read by every composite (registry.preset_kwargs)

    def __init__(self, model, *, composite="epsilon", epsilon=None, gamma=None, alpha=None, beta=None,
                 low=None, high=None, batchnorm=True, affine_layers=(), **common):
        super().__init__(model, params=dict(composite=composite, epsilon=epsilon, gamma=gamma, alpha=alpha,
                                            beta=beta, low=low, high=high, batchnorm=batchnorm,
                                            affine_layers=affine_layers), **common)

    @staticmethod
    def preset_section(composite="epsilon", **_):
        """The :mod:`xaitf.settings` section of ``composite``'s presets: ``lrp`` (epsilon) for
        lrp.epsilon, ``deep_taylor`` (low, high) for deep_taylor.bounded, none for the others
        (they keep their composite's own parameters)."""
        name = composite if isinstance(composite, str) else None
        return {"lrp.epsilon": "lrp", "epsilon": "lrp", "deep_taylor.bounded": "deep_taylor"}.get(name)

    def setup(self):
        p = self.params
        comp = C.get(p["composite"])
        given = {k: p[k] for k in C.PARAMS if p[k] is not None}
        unused = sorted(set(given) - C.used_params(comp))
        if unused:
            name = p["composite"] if isinstance(p["composite"], str) else "this composite"
            valid = ", ".join(sorted(C.used_params(comp))) or "none"
            raise MethodError(f"LRP composite {name!r} does not use {', '.join(unused)}; its parameters: {valid}")
        if not isinstance(p["batchnorm"], (bool, np.bool_)):
            raise MethodError(f"LRP batchnorm must be True or False, got {p['batchnorm']!r}")
        self._prop = propagator(self.model, p["composite"], given, batchnorm=bool(p["batchnorm"]),
                                fingerprint=self._weights_crc, affine=_layer_names(p["affine_layers"]))
        self._bounds = C.input_bounds(comp, given)
        if self._prop.output == "relu":
            _check_relu_network(self._prop.graph, p["composite"])

    def explain_batch(self, x, targets):
        if self._bounds is not None:
            _check_bounds(x, *self._bounds, self.params["composite"])
        r = self._prop(x, targets)
        zero = ~np.any(r.reshape(len(r), -1), axis=1)
        if zero.any():
            name = self.params["composite"] if isinstance(self.params["composite"], str) else "this composite"
            if self._prop.output == "relu":
                why = ("Deep Taylor starts from relu(f_c), so an explained logit <= 0 gives an empty map (explain "
                       "the predicted class, or use an LRP composite such as lrp.epsilon)")
            else:       # e.g. epsilon = 1 against logits of 1e-10 (an untrained model): all of it absorbed
                why = ("the relevance vanished on its way to the input (a stabiliser such as epsilon larger than "
                       "the explained logit absorbs all of it; an output of exactly 0); try a smaller epsilon= "
                       "or lrp.z")
            warnings.warn(f"{name}: {int(zero.sum())} of {len(r)} maps are all 0: {why}",
                          stacklevel=_caller_stacklevel())
        return r


def _layer_names(names):
    """``affine_layers`` as a tuple of strings (a string may hold several, comma-separated, as
    ``--set lrp_graph.affine_layers=Patches,PatchEncoder`` gives them)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    try:
        out = tuple(names or ())
    except TypeError:
        out = (names,)
    if not all(isinstance(n, str) and n for n in out):
        raise MethodError(f"LRP affine_layers must be layer names or class names (strings), got {names!r}")
    return out


RELU_LIKE = ("relu", "relu6", "linear", None)
BOUNDS_TOLERANCE = 1e-5     # of high - low: rounding of the preprocessing, not a wrong domain


def _check_bounds(x, low, high, composite):
    """The z^B rule (Montavon et al. 2017, sec. 4.3) needs low <= x <= high per value: its
    denominators can change sign outside the box, and the maps then blow up. InputError otherwise."""
    x = np.asarray(x)
    axes = tuple(range(x.ndim - 1))
    lo, hi = np.min(x, axis=axes), np.max(x, axis=axes)
    low, high = np.broadcast_to(low, lo.shape), np.broadcast_to(high, hi.shape)
    tol = BOUNDS_TOLERANCE * np.max(high - low)
    bad = np.flatnonzero((lo < low - tol) | (hi > high + tol))
    if not bad.size:
        return
    name = composite if isinstance(composite, str) else "this composite"
    if np.ptp(low) == 0 and np.ptp(high) == 0:
        where, c = "the inputs range", 0
        lo, hi = np.min(lo), np.max(hi)
    else:
        c = int(bad[0])
        where, lo, hi = f"channel {c} of the inputs ranges", lo[c], hi[c]
    raise InputError(f"{name}: {where} over [{lo:.4g}, {hi:.4g}], outside the z^B bounds low={low[c]:.4g}, "
                     f"high={high[c]:.4g} the rule needs; pass low= and high= the range of the model's inputs "
                     "(e.g. low=-1, high=1 after x / 127.5 - 1; the command lines take them from --preprocess)")


def _check_relu_network(graph, composite):
    """Deep Taylor decomposes ReLU networks (Montavon et al. 2017, sec. 4): refuse other activations."""
    for node in graph.nodes:
        act = node.config.get("activation") if node.kind == "Activation" else None
        gated = node.config.get("self_gated") and "x * f(x) (a self-gated activation such as swish)"
        bad = (node.kind in ("LeakyReLU", "ELU", "PReLU") or (node.kind == "ReLU" and node.config["negative_slope"])
               or act not in RELU_LIKE or gated)
        if bad:
            name = composite if isinstance(composite, str) else "this composite"
            raise ModelError(f"{name} needs a ReLU network, but node {node.label()} is "
                             f"{gated or act or node.kind}; use lrp.epsilon, lrp.z, lrp.alpha_2_beta_1 or a "
                             f"gradient method instead")
