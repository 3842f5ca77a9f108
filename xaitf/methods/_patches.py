"""Patches written into regions of a batch of images: gather indices and in-window masks.

Shared by the perturbation engine (:mod:`xaitf.methods.perturb`) and the receptive-field cropping
of window methods (:mod:`xaitf.methods._local_windows`), which needs them without the engine.
"""
import tensorflow as tf


def place(values, r, c, rows, cols):
    """Where a (B,kh,kw,C) patch placed at (r, c) lands in the region ``rows x cols``.

    ``rows`` (B, R) and ``cols`` (B, Q) are absolute coordinates; returns the in-window mask
    (B,R,Q,1) and the patch values gathered at every region pixel (B,R,Q,C).
    """
    kh, kw = values.shape[1], values.shape[2]
    ri = rows - r[:, None]
    ci = cols - c[:, None]
    inside = (((ri >= 0) & (ri < kh))[:, :, None] & ((ci >= 0) & (ci < kw))[:, None, :])
    vr = tf.gather(values, tf.clip_by_value(ri, 0, kh - 1), axis=1, batch_dims=1)
    vrc = tf.gather(vr, tf.clip_by_value(ci, 0, kw - 1), axis=2, batch_dims=1)
    return inside[..., None], vrc


def grid_index(b, rows, cols):
    """(B,R,Q,3) gather_nd indices (b, row, col) for regions ``rows x cols`` of images ``b``."""
    shape = tf.stack([tf.shape(b)[0], tf.shape(rows)[1], tf.shape(cols)[1]])
    return tf.stack([tf.broadcast_to(b[:, None, None], shape),
                     tf.broadcast_to(rows[:, :, None], shape),
                     tf.broadcast_to(cols[:, None, :], shape)], -1)
