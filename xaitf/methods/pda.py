"""Prediction difference analysis (Zintgraf, Cohen, Adel & Welling, ICLR 2017, "Visualizing deep
neural network decisions: prediction difference analysis").

For a window ``w`` of ``window`` pixels (all channels), slid with step ``stride``, the class
probability without the window is estimated by replacing the window with samples ``v_s`` of its
values and averaging::

    pbar(c | x without w) = sum_s weight_s * p(c | x with w <- v_s)

Both probabilities get the Laplace correction ``p' = (p N + 1) / (N + K)`` (``N = train_samples``,
``K`` classes) and the relevance is the weight of evidence::

    WE_w = log2(p'(c|x) / (1 - p'(c|x))) - log2(pbar'(c|x\\w) / (1 - pbar'(c|x\\w)))

averaged over the windows that cover a pixel. ``p`` is the class probability (the model's softmax
output, or a softmax of its output if it has none).

Sampling of the window's values:

* ``marginal`` without ``data`` (study 1): ``values`` evenly spaced intensities ``v/(values-1)``,
  ``v = 0..values-1``, written into every pixel and channel of the window, uniform weights
  (``values=256`` with a 1x1 window: every 8-bit value);
* ``marginal`` with ``data`` (M,H,W,C): ``samples`` windows copied from randomly drawn data images
  at the same location (the empirical marginal of the window), uniform weights;
* ``conditional`` with ``data``: the window and the surrounding patch (``patch`` pixels wide on each
  side; zeros beyond the border) are modelled as a Gaussian whose mean and covariance are
  estimated from ``data`` at that location (``ridge`` added to the diagonals); ``samples`` draws
  of the window from the Gaussian conditioned on the patch's observed values in ``x``.

Random draws depend only on the seed and the window position, not on ``batch_size``.
"""
import numpy as np

import xaitf  # noqa: F401
import tensorflow as tf

from ..compat import quiet_retracing
from ..errors import InputError, MethodError
from ..explainer import Explainer
from .perturb import as_pair, check_int, paint, probability_engine, window_grid, window_pairs

SAMPLINGS = ("marginal", "conditional")
_BLOCK = 1024          # positions per block of random draws (keeps draws batch-independent)


def laplace(p, n, k):
    """Laplace-corrected probability ``(p n + 1) / (n + k)``."""
    return (np.asarray(p, np.float64) * n + 1.0) / (n + k)


def log2_odds(p):
    return np.log2(p) - np.log2(1.0 - p)


class PredictionDifference(Explainer):
    """Prediction difference analysis (Zintgraf et al. 2017), batched over inputs and windows.

    Args:
        model: tf-keras or Keras 3 image classifier.
        window: window height and width (int or pair), covering every channel (1).
        stride: step between windows (int or pair); the last window is flush with the border (1).
        sampling: ``"marginal"`` or ``"conditional"`` (see the module docstring) ("marginal").
        values: number of evenly spaced intensities (marginal sampling without data), >= 2 (256).
        value_range: ``(low, high)`` of those intensities in the model's input space, each a
            number or one per channel ((0.0, 1.0): images scaled to [0, 1]). After another
            preprocessing, the model inputs of black and white pixels: e.g. caffe's BGR mean-shifted
            ``(-mean, 255 - mean)``; ``heatmap_script.py --preprocess`` passes them.
        train_samples: N of the Laplace correction (study 1: 256000).
        num_classes: K of the Laplace correction; None = the model's number of outputs (None).
        patch: width of the surrounding patch that conditional sampling conditions on, >= 1 (2).
        data: (M,H,W,C) images the sampling distributions are estimated from (None: value grid).
        samples: draws per window for data-based marginal and conditional sampling (10).
        ridge: added to the covariance diagonals of conditional sampling (1e-4).
        windows_per_batch: windows per chunk when ``batch_size`` is None (study 1: 11), so a
            chunk holds ``windows_per_batch x samples`` model evaluations.
        shortcut: use the exact first-layer shortcut when the model allows it (True).
        batch_size: model evaluations per chunk (windows x samples); None (the default) lets
            ``windows_per_batch`` decide (``windows_per_batch x samples``); a number overrides it.
        **common: channel_reduce, seed, progress, output (see :class:`xaitf.explainer.Explainer`).
        seed: the data-based draws (marginal / conditional samples per window), keyed by (seed,
            window block) (counter-based: independent of batch_size and of the other inputs); unused by the value grid.

    Returns (N,H,W) maps of weights of evidence (bits).
    """

    key = "pda"           # the preset section of xaitf.settings
    default_output = "probabilities"
    outputs = ("probabilities",)   # weights of evidence are log-odds of class probabilities
    stochastic = True

    def __init__(self, model, *, window=1, stride=1, sampling="marginal", values=256,
                 value_range=(0.0, 1.0), train_samples=256000, num_classes=None, patch=2, data=None, samples=10,
                 ridge=1e-4, windows_per_batch=11, shortcut=True, batch_size=None, **common):
        self._batch_given = batch_size is not None
        super().__init__(model, params=dict(window=window, stride=stride, sampling=sampling,
                                            values=values, value_range=value_range,
                                            train_samples=train_samples,
                                            num_classes=num_classes, patch=patch, data=data,
                                            samples=samples, ridge=ridge,
                                            windows_per_batch=windows_per_batch, shortcut=shortcut),
                         # None: validated as the common default, then set by setup()
                         batch_size=256 if batch_size is None else batch_size, **common)

    def setup(self):
        p = self.params
        own = "PredictionDifference"
        self.window = as_pair(p["window"], "window", own)
        self.stride = as_pair(p["stride"], "stride", own)
        if p["sampling"] not in SAMPLINGS:
            raise MethodError(f"{own} sampling must be one of {', '.join(SAMPLINGS)}, got {p['sampling']!r}")
        self.sampling = p["sampling"]
        self.train_samples = check_int(p["train_samples"], "train_samples", own, 1)
        self.k = (self.num_classes if p["num_classes"] is None
                  else check_int(p["num_classes"], "num_classes", own, 2))
        h, w, c = self.shape
        if c is None:
            raise MethodError(f"{own} needs a model with a known number of input channels")
        if h is not None and w is not None:
            window_grid(h, w, self.window, self.stride, own)
        self.data = None if p["data"] is None else self._check_data(p["data"])
        if self.data is None:
            if self.sampling == "conditional":
                raise MethodError(f"{own} conditional sampling needs data=(M,H,W,C) images to estimate "
                                  "the Gaussian from; pass data=... or use sampling='marginal'")
            self.n_samples = check_int(p["values"], "values", own, 2)
            self.low, self.high = self._check_range(p["value_range"], c)
        else:
            self.n_samples = check_int(p["samples"], "samples", own, 1)
        if self.sampling == "conditional":
            self.patch = check_int(p["patch"], "patch", own, 1)
            if len(self.data) < 2:
                raise MethodError(f"{own} conditional sampling needs at least 2 data images")
            ridge = p["ridge"]
            if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
                raise MethodError(f"{own} needs ridge to be a number >= 0, got {ridge!r}")
            self.ridge = float(ridge)
        per_batch = check_int(p["windows_per_batch"], "windows_per_batch", own, 1)
        if not self._batch_given:      # study 1: 11 features (windows) x all their samples per batch
            self.batch_size = self.capped_batch(per_batch * self.n_samples)
        self.engine = probability_engine(self.model, shortcut=bool(p["shortcut"]),
                                         batch_size=self.batch_size, show_progress=self.progress,
                                         desc="pda")

    def _check_data(self, data):
        data = np.asarray(data, dtype=np.float32)
        h, w, c = self.shape
        if data.ndim == 3 and c == 1:
            data = data[..., None]
        if data.ndim != 4 or len(data) == 0 or data.shape[-1] != c or \
                (h is not None and data.shape[1] != h) or (w is not None and data.shape[2] != w):
            raise InputError(f"PredictionDifference data must be images shaped (M,{h},{w},{c}), "
                             f"got {data.shape}")
        if not np.all(np.isfinite(data)):
            raise InputError("PredictionDifference data contain NaN or infinite values")
        return data

    def chunk_size(self):
        h, w = self.shape[:2]
        if h is None or w is None:
            return self.batch_size
        per_input = len(window_grid(h, w, self.window, self.stride, "PredictionDifference"))
        return max(1, (1 << 20) // (per_input * self.n_samples))

    # -- samples of the window's values ---------------------------------------------------------
    def _blocks(self, lo, hi, tag, draw):
        """Draws for positions lo..hi-1, made per block of positions from (seed, tag, block)."""
        out = [draw(np.random.default_rng([self.seed, tag, blk]))
               for blk in range(lo // _BLOCK, (hi - 1) // _BLOCK + 1)]
        out = np.concatenate(out)
        off = (lo // _BLOCK) * _BLOCK
        return out[lo - off:hi - off]

    def _data_values(self, grid, pos):
        """(B,S,kh,kw,C): windows copied from random data images at each pair's position."""
        lo, hi = int(pos.min()), int(pos.max()) + 1
        m, s = len(self.data), self.n_samples
        pick = self._blocks(lo, hi, 2, lambda g: g.integers(m, size=(_BLOCK, s)))[pos - lo]   # (B,S)
        kh, kw = self.window
        rows = grid[pos, 0][:, None, None, None] + np.arange(kh)[:, None]
        cols = grid[pos, 1][:, None, None, None] + np.arange(kw)
        return self.data[pick[:, :, None, None], rows, cols]

    def _conditional_values(self, xp, grid, b, pos):
        """(B,S,kh,kw,C): draws of the window given the surrounding patch of x (Gaussian)."""
        lo, hi = int(pos.min()), int(pos.max()) + 1
        mu_w, mu_r, at, chol = self._gaussians(grid[lo:hi])
        kh, kw = self.window
        c = xp.shape[-1]
        oh, ow = kh + 2 * self.patch, kw + 2 * self.patch
        d = kh * kw * c
        eps = self._blocks(lo, hi, 1, lambda g: g.standard_normal((_BLOCK, self.n_samples, d)))
        i = tf.constant(pos - lo)
        rows = grid[pos, 0][:, None] + np.arange(oh)      # padded coordinates: patch starts at r
        cols = grid[pos, 1][:, None] + np.arange(ow)
        idx = np.stack(np.broadcast_arrays(b[:, None, None], rows[:, :, None], cols[:, None, :]), -1)
        outer = tf.reshape(tf.cast(tf.gather_nd(xp, idx), tf.float64), [len(pos), -1])
        x_r = tf.gather(outer, self._ring, axis=1)
        mean = tf.gather(mu_w, i) + tf.einsum("br,brd->bd", x_r - tf.gather(mu_r, i), tf.gather(at, i))
        draws = mean[:, None] + tf.einsum("bed,bsd->bse", tf.gather(chol, i), tf.gather(eps, i))
        return tf.reshape(tf.cast(draws, tf.float32), [len(pos), self.n_samples, kh, kw, c]).numpy()

    def _gaussians(self, corners):
        """Per position: window mean, patch mean, A^T = S_rr^-1 S_rw, chol(S_ww - S_wr A^T)."""
        m, c = len(self.data), self.data.shape[-1]
        kh, kw = self.window
        oh, ow = kh + 2 * self.patch, kw + 2 * self.patch
        dim = oh * ow * c
        step = max(1, min((1 << 24) // (m * dim), (1 << 24) // (dim * dim)))
        parts = []
        for s in range(0, len(corners), step):
            cs = corners[s:s + step]
            rows = cs[:, 0][:, None] + np.arange(oh)
            cols = cs[:, 1][:, None] + np.arange(ow)
            idx = np.stack(np.broadcast_arrays(rows[:, :, None], cols[:, None, :]), -1)   # (p,oh,ow,2)
            patches = tf.gather_nd(self._data_t, idx)                                     # (p,oh,ow,M,C)
            patches = tf.reshape(tf.transpose(patches, [0, 3, 1, 2, 4]), [len(cs), m, dim])
            patches = tf.cast(patches, tf.float64)
            parts.append(self._fit_fn(patches))
        return [tf.concat(p, 0) for p in zip(*parts)]

    def _fit(self, patches):
        mu = tf.reduce_mean(patches, 1)
        xc = patches - mu[:, None]
        cov = tf.einsum("pmd,pme->pde", xc, xc) / tf.cast(tf.shape(patches)[1] - 1, tf.float64)
        w, r = self._win, self._ring
        s_ww = tf.gather(tf.gather(cov, w, axis=1), w, axis=2)
        s_rw = tf.gather(tf.gather(cov, r, axis=1), w, axis=2)
        s_rr = tf.gather(tf.gather(cov, r, axis=1), r, axis=2)
        eye_r = tf.eye(tf.shape(s_rr)[-1], dtype=tf.float64)
        eye_w = tf.eye(tf.shape(s_ww)[-1], dtype=tf.float64)
        at = tf.linalg.cholesky_solve(tf.linalg.cholesky(s_rr + self.ridge * eye_r), s_rw)
        cond = s_ww - tf.matmul(s_rw, at, transpose_a=True)
        cond = 0.5 * (cond + tf.linalg.matrix_transpose(cond))
        chol = tf.linalg.cholesky(cond + max(self.ridge, 1e-12) * eye_w)
        return tf.gather(mu, w, axis=1), tf.gather(mu, r, axis=1), at, chol

    def _prepare_conditional(self, c):
        kh, kw = self.window
        oh, ow = kh + 2 * self.patch, kw + 2 * self.patch
        inner = np.zeros((oh, ow, c), bool)
        inner[self.patch:self.patch + kh, self.patch:self.patch + kw] = True
        self._win = tf.constant(np.flatnonzero(inner.ravel()), tf.int32)
        self._ring = tf.constant(np.flatnonzero(~inner.ravel()), tf.int32)
        if getattr(self, "_data_t", None) is None:
            pad = [[0, 0], [self.patch, self.patch], [self.patch, self.patch], [0, 0]]
            padded = np.pad(self.data, pad)
            self._data_t = tf.constant(np.transpose(padded, [1, 2, 0, 3]))     # (Hp,Wp,M,C)
            self._fit_fn = tf.function(lambda patches: self._fit(patches), reduce_retracing=True, autograph=False)
            quiet_retracing(self._fit_fn)

    @staticmethod
    def _check_range(value_range, channels):
        """``(low, high)`` -> two float64 arrays of ``channels`` values, low < high, finite."""
        own = "PredictionDifference"
        try:
            lo, hi = (np.broadcast_to(np.asarray(v, np.float64), (channels,)) for v in value_range)
        except (TypeError, ValueError):
            raise MethodError(f"{own} needs value_range to be (low, high), each a number or {channels} "
                              f"numbers (one per channel), got {value_range!r}") from None
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
            raise MethodError(f"{own} needs value_range low < high, finite, got {value_range!r}")
        return lo, hi

    # -- the method -----------------------------------------------------------------------------
    def explain_batch(self, x, targets):
        n, h, w, c = x.shape
        own = "PredictionDifference"
        grid = window_grid(h, w, self.window, self.stride, own)
        if self.data is not None and self.data.shape[1:3] != (h, w):
            raise InputError(f"{own} data are {self.data.shape[1:3]} images, the inputs {(h, w)}")
        b, pos_xy = window_pairs(n, grid)
        pos = np.repeat(np.arange(len(grid)), n)
        s = self.n_samples
        weights = np.full(s, 1.0 / s)
        kw = dict(shared=None, pair_values=None)
        if self.data is None:       # study 1: every intensity v/(values-1), all channels
            vals = self.low + np.arange(s, dtype=np.float64)[:, None] / (s - 1) * (self.high - self.low)
            kw["shared"] = np.broadcast_to(vals[:, None, None, :], (s,) + self.window + (c,))
        elif self.sampling == "marginal":
            kw["pair_values"] = lambda lo, hi: self._data_values(grid, pos[lo:hi])
        else:
            self._prepare_conditional(c)
            xp = tf.constant(np.pad(x, [[0, 0], [self.patch] * 2, [self.patch] * 2, [0, 0]]))
            kw["pair_values"] = lambda lo, hi: self._conditional_values(xp, grid, b[lo:hi], pos[lo:hi])
        p_x = self.engine.target_outputs(x, targets)
        p_without = self.engine.window_scores(x, b, pos_xy, targets[b], weights, **kw)
        nn, kk = self.train_samples, self.k
        we = log2_odds(laplace(p_x[b], nn, kk)) - log2_odds(laplace(p_without, nn, kk))
        return paint(we.reshape(len(grid), n).T, grid, self.window, h, w)
