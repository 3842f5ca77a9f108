"""Data loaders: MNIST and CIFAR-10 (:mod:`.datasets`), SVHN format 1 and 2 (:mod:`.svhn`), single
images (:mod:`.images`). Offline copies live in a data directory (``--data-dir`` or
``XAITF_DATA_DIR``); nothing ever falls back to synthetic data."""
from . import images, svhn
from .datasets import ENV_VAR, Dataset, data_dir, load_dataset

__all__ = ["Dataset", "data_dir", "load_dataset", "ENV_VAR", "images", "svhn"]
