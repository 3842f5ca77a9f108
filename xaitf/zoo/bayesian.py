"""Study 4's Bayesian MLP: 784 -> 1024 ReLU -> 10 with a mean-field Normal posterior over weights.

Built from tensorflow-probability's ``DenseReparameterization`` layers (tf-keras only). Every weight
and bias w has a N(0, 1) prior and a posterior q(w) = Normal(mu, sigma) with
``sigma = 1e-5 + softplus(rho)``; training maximises the ELBO, i.e. minimises

    mean_batch[-log p(y | x, w ~ q)] + KL(q || prior) / N_train

(Keras adds the layers' KL terms, already divided by ``n_train``, to the cross-entropy). Each forward
pass draws one weight sample for the whole batch: one call = one sampled network.

The initial ``rho`` matters for the refusal rule (seeds.md, study 4): tfp's default (-9, sigma ~1e-4)
gives an almost deterministic network that refuses little noise; ``init_rho = -1`` (sigma ~0.31)
with 5 epochs of Adam lr 0.01 gives ~88% accuracy while refusing ~all uniform noise, close to the
original (pyro, 89%, noise 100/100 refused).

Because tfp layers hold Python callables that tf-keras ``.h5`` files cannot restore, create_model.py
saves this model as a weights file tagged with its builder and arguments; ``xaitf.load_model``
rebuilds it from here (see :func:`xaitf.zoo.registry.load_weights_file`).
"""
import numpy as np

from ..keras_bridge import tfk

DEFAULT_INIT_RHO = -1.0   # initial untransformed posterior scale: softplus(-1) ~ 0.31


def _posterior_fn(init_rho, seed, is_singular=False):
    import tensorflow_probability as tfp

    return tfp.layers.default_mean_field_normal_fn(
        is_singular=is_singular,
        loc_initializer=tfk.initializers.RandomNormal(stddev=0.1, seed=seed),
        untransformed_scale_initializer=tfk.initializers.RandomNormal(mean=init_rho, stddev=0.1,
                                                                      seed=seed + 1))


def build_bayesian_mlp(input_shape=(28, 28, 1), hidden=1024, num_classes=10, n_train=60_000,
                       init_rho=DEFAULT_INIT_RHO, seed=0):
    """The study-4 Bayesian MLP (tf-keras + tfp ``DenseReparameterization``).

    Args:
        input_shape: shape of one [0, 1] image; flattened to 784 values for MNIST.
        hidden: units of the hidden layer (study: 1024).
        num_classes: output units.
        n_train: training-set size N; each layer's KL term is divided by N so the Keras loss is the
            per-example negative ELBO.
        init_rho: initial untransformed scale rho of every posterior (sigma = softplus(rho)).
        seed: seed of the posterior initialisers.

    Returns a model whose output is the softmax of one sampled network's logits (layer ``logits`` is
    the last Bayesian layer, ``softmax`` the separate softmax layer).
    """
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    n_train = float(n_train)

    def kl(q, p, _):
        return tfd.kl_divergence(q, p) / n_train

    def bayes_dense(units, activation, name, s):
        return tfp.layers.DenseReparameterization(
            units, activation=activation, name=name,
            kernel_posterior_fn=_posterior_fn(init_rho, s),
            kernel_prior_fn=tfp.layers.default_multivariate_normal_fn,
            kernel_divergence_fn=kl,
            bias_posterior_fn=_posterior_fn(init_rho, s + 2),
            bias_prior_fn=tfp.layers.default_multivariate_normal_fn,
            bias_divergence_fn=kl)

    inp = tfk.Input(input_shape, name="image")
    h = tfk.layers.Flatten(name="flatten")(inp)
    h = bayes_dense(hidden, "relu", "hidden", seed * 10 + 1)(h)
    h = bayes_dense(num_classes, None, "logits", seed * 10 + 5)(h)
    out = tfk.layers.Softmax(name="softmax")(h)
    return tfk.Model(inp, out, name="bayesian_mlp")


def sample_probs(model, x, samples=10, batch_size=2048, seed=None):
    """Class probabilities of ``samples`` sampled networks: array (samples, N, K).

    Each model call draws one weight sample shared by the whole chunk, so one sample index = one
    network. ``seed`` (optional) resets TensorFlow's global seed first, for repeatable draws.
    """
    import tensorflow as tf

    if seed is not None:
        tf.random.set_seed(seed)
    x = np.asarray(x, np.float32)
    forward = tf.function(lambda t: model(t, training=False), reduce_retracing=True, autograph=False)
    out = np.empty((samples, len(x), int(model.outputs[0].shape[-1])), np.float32)
    for s in range(samples):   # one call = one sampled network (faster here than a traced while loop)
        for i in range(0, len(x), batch_size):
            out[s, i:i + batch_size] = forward(tf.constant(x[i:i + batch_size])).numpy()
    return out


def predict_mean(model, x, samples=10, batch_size=2048, seed=None):
    """Bayesian model average: mean over ``samples`` sampled networks of their probabilities, (N, K)."""
    return sample_probs(model, x, samples, batch_size, seed).mean(axis=0)


def refusal_rule(probs, threshold=0.2):
    """The study-4 refusal rule on sampled probabilities.

    Args:
        probs: (S, N, K) probabilities of S sampled networks.
        threshold: a class must have a MEDIAN probability (over the S samples) above this.

    Returns ``(predictions, refused)``: predictions (N,) int = argmax of the per-class medians
    (meaningful where not refused), refused (N,) bool = no class's median exceeds ``threshold``.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"refusal_rule expects (samples, N, classes) probabilities, got shape {probs.shape}")
    med = np.median(probs, axis=0)
    return med.argmax(axis=1), ~(med > threshold).any(axis=1)


def refuse(model, x, samples=100, threshold=0.2, batch_size=2048, seed=None):
    """Predict only where some class's median probability over ``samples`` networks exceeds ``threshold``.

    Returns ``(predictions, refused)`` as :func:`refusal_rule` (study 4: 100 samples, threshold 0.2).
    """
    return refusal_rule(sample_probs(model, x, samples, batch_size, seed), threshold)
