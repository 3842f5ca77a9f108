"""create_model.py --track mlflow logs the training curves and final metrics to an MLflow file store."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _create_model():
    spec = importlib.util.spec_from_file_location("create_model", ROOT / "create_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_create_model_tracks_training(tmp_path, data_dir):
    pytest.importorskip("mlflow")
    cm = _create_model()
    code = cm.main(["lenet", "--data-dir", str(data_dir), "--limit", "64", "--epochs", "2",
                    "--out", str(tmp_path / "models"), "--track", "mlflow", "--no-progress"])
    assert code == 0
    runs = [p for p in (tmp_path / "mlruns").rglob("metrics") if p.is_dir()]
    assert len(runs) == 1
    metrics = {p.name: p.read_text().split() for p in runs[0].iterdir()}
    # one line per epoch: "<timestamp> <value> <step>"
    loss_lines = (runs[0] / "lenet.loss").read_text().strip().splitlines()
    assert [int(l.split()[2]) for l in loss_lines] == [0, 1]
    assert all(float(l.split()[1]) > 0 for l in loss_lines)
    acc = float(metrics["lenet.test_accuracy"][1])
    assert 0.0 <= acc <= 1.0
