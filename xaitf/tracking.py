"""Optional experiment tracking with MLflow (``pip install 'xaitf[track]'``: mlflow-skinny 3.17).

Two users:

* ``python -m xaitf run ... --track mlflow [--track-uri URI]`` logs the run's parameters (model and
  data hashes, every method's settings), per-method throughput and ``--metrics`` values, and the
  overview figure plus ``summary.json``/``run.json``/``metrics.json`` as artifacts. A resumed run
  logs into the same MLflow run (its id is kept in ``<out>/run.json``), one step per session.
* Training: :func:`keras_callback` gives a Keras callback that logs every epoch's ``logs``
  (loss, accuracy, val_*) and the learning rate::

      tracker = tracking.start_run("mlflow", "mlruns", "create_model", run_name="mnist_cnn")
      model.fit(..., callbacks=[tracking.keras_callback(tracker, kind="tf-keras")])
      tracker.log_metrics({"test_accuracy": acc}); tracker.end()

A URI without a scheme is a folder: MLflow's file store, no server. MLflow 3 refuses new file
stores unless ``MLFLOW_ALLOW_FILE_STORE=true``; this module sets that variable (if unset) for
file URIs only. ``sqlite:///...`` and ``http(s)://`` URIs are passed to MLflow unchanged.
mlflow is imported on first use: ``import xaitf.tracking`` costs nothing.
"""
import math
import os
import re
import time
from pathlib import Path

from .errors import XaitfError
from .extras import MLFLOW, require_extra

KINDS = ("mlflow",)
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]")
MAX_PARAM = 6000     # MLflow's limit on a parameter value


def _mlflow():
    return require_extra(*MLFLOW)


def tracking_uri(uri):
    """``file://`` URI for a folder path; URIs with a scheme unchanged."""
    text = str(uri)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text) and not re.match(r"^[A-Za-z]:[\\/]", text):
        return text
    return Path(text).expanduser().resolve().as_uri()


def _key(k):
    return _BAD_KEY.sub("_", str(k))[:250]


class NullTracker:
    """Tracking switched off: every call does nothing."""

    run_id = None
    uri = None

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=0):
        pass

    def log_artifact(self, path):
        pass

    def log_figure(self, fig, name):
        pass

    def end(self, status="FINISHED"):
        pass


class MlflowTracker(NullTracker):
    """One MLflow run through ``MlflowClient`` (no global ``mlflow.start_run`` state).

    Args:
        uri: tracking URI or folder (file store).
        experiment: experiment name (created if missing).
        run_name: the run's display name.
        run_id: continue this run if it exists in the store (its status goes back to RUNNING).
        tags: extra tags of a new run.
    """

    def __init__(self, uri, experiment, run_name=None, run_id=None, tags=None):
        _mlflow()
        self.uri = tracking_uri(uri)
        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            Path(self.uri[len("file://"):] if self.uri.startswith("file://") else self.uri[5:]
                 ).mkdir(parents=True, exist_ok=True)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id = None
        if run_id:
            try:
                self.client.get_run(run_id)
                self.client.update_run(run_id, status="RUNNING")
                self.run_id = run_id
            except Exception:  # noqa: BLE001 - run gone or another store: start a new one
                self.run_id = None
        if self.run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
            run = self.client.create_run(exp_id, run_name=run_name,
                                         tags={_key(k): str(v) for k, v in (tags or {}).items()})
            self.run_id = run.info.run_id
        self._params = dict(self.client.get_run(self.run_id).data.params)

    def log_params(self, params):
        """Log new parameters; ones already logged with the same value are skipped."""
        from mlflow.entities import Param

        new = []
        for k, v in params.items():
            key, value = _key(k), str(v)[:MAX_PARAM]
            if self._params.get(key) == value:
                continue
            if key in self._params:   # MLflow forbids changing a parameter: keep the change as a tag
                self.client.set_tag(self.run_id, f"changed.{key}", value)
                continue
            new.append(Param(key, value))
            self._params[key] = value
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def log_metrics(self, metrics, step=0):
        """Log numeric values (others skipped) at ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for k, v in metrics.items():
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                items.append(Metric(_key(k), value, now, int(step)))
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_artifact(self, path):
        self.client.log_artifact(self.run_id, str(path))

    def log_figure(self, fig, name):
        self.client.log_figure(self.run_id, fig, name)

    def end(self, status="FINISHED"):
        self.client.set_terminated(self.run_id, status)


def start_run(kind, uri, experiment, run_name=None, run_id=None, tags=None):
    """A tracker: ``kind`` None/"none" -> :class:`NullTracker`, "mlflow" -> :class:`MlflowTracker`."""
    if kind in (None, "", "none"):
        return NullTracker()
    if kind == "mlflow":
        return MlflowTracker(uri, experiment, run_name=run_name, run_id=run_id, tags=tags)
    raise XaitfError(f"unknown tracker {kind!r}; valid: {', '.join(KINDS)}")


def keras_callback(tracker, kind="tf-keras", prefix="", params=None):
    """A Keras callback logging training curves to ``tracker``.

    Args:
        tracker: from :func:`start_run` (a :class:`NullTracker` makes the callback a no-op).
        kind: ``"tf-keras"`` or ``"keras3"``: which Keras' ``Callback`` to subclass (or a model).
        prefix: put before every metric name (e.g. the model name when one run trains several).
        params: extra parameters logged at the start of training (e.g. the recipe).

    Logs at ``on_train_begin`` the epochs, steps and ``params``; at ``on_epoch_end(epoch)`` every
    numeric entry of ``logs`` (loss, accuracy, val_loss, ...) and ``lr`` (when the optimizer's
    learning rate is a plain value), at step ``epoch``.
    """
    from .keras_bridge import kmodule

    base = kmodule(kind).callbacks.Callback

    class TrackingCallback(base):
        def on_train_begin(self, logs=None):
            info = {f"{prefix}epochs": self.params.get("epochs"),
                    f"{prefix}steps": self.params.get("steps")}
            info.update({f"{prefix}{k}": v for k, v in (params or {}).items()})
            tracker.log_params({k: v for k, v in info.items() if v is not None})

        def on_epoch_end(self, epoch, logs=None):
            values = {f"{prefix}{k}": v for k, v in (logs or {}).items()}
            lr = _learning_rate(self.model)
            if lr is not None:
                values[f"{prefix}lr"] = lr
            tracker.log_metrics(values, step=epoch)

    return TrackingCallback()


def _learning_rate(model):
    try:
        lr = model.optimizer.learning_rate
        value = lr.numpy() if hasattr(lr, "numpy") else lr
        return float(value)
    except Exception:  # noqa: BLE001 - schedules, no optimizer: not logged
        return None
