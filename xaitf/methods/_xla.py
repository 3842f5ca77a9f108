"""XLA on the CPU: whether it compiles here, and small elementwise programs fused by it.

TensorFlow runs every elementwise op as its own pass over memory, and its broadcasting kernels are
slow on CPU; XLA compiles a chain of them into one loop. :func:`fused` wraps such a function:
calls go to the XLA-compiled version where XLA is available and to the plain TF ops otherwise
(the same numbers up to rounding). Convolutions stay out of it: XLA's CPU convolutions are slower
than TensorFlow's oneDNN kernels.
"""
import functools

import tensorflow as tf

_AVAILABLE = []


def xla_available():
    """Whether XLA can compile here (checked once)."""
    if not _AVAILABLE:
        try:
            tf.function(lambda a: a * 2.0, jit_compile=True, autograph=False)(tf.ones([2]))
            _AVAILABLE.append(True)
        except Exception:  # noqa: BLE001 - platforms without XLA
            _AVAILABLE.append(False)
    return _AVAILABLE[0]


class Fused:
    """``fn`` run as one XLA loop where XLA is available (``.xla``), else as is (``.plain``)."""

    def __init__(self, fn):
        self.plain = fn
        self.xla = tf.function(fn, jit_compile=True, reduce_retracing=True, autograph=False)
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        return (self.xla if xla_available() else self.plain)(*args)


def fused(fn):
    """:class:`Fused` of ``fn``."""
    return Fused(fn)
