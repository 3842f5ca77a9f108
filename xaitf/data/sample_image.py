"""``python -m xaitf.data.sample_image --data mnist --index 0 --out results/demo/digit.png``: write
one real test image of MNIST or CIFAR-10 (from the offline data directory, ``--data-dir`` or
``$XAITF_DATA_DIR``) as a PNG, e.g. to pass to ``heatmap_script.py -ip``. The file's name is kept;
it is written to a temporary name and renamed. Prints the path and the image's label. Without
data it ends with one line on stderr and exit code 1 (nothing is written, nothing downloaded).
"""
from pathlib import Path

import numpy as np

from .. import cli


def build_parser():
    p = cli.ArgumentParser(prog="python -m xaitf.data.sample_image",
                           description="Write one real MNIST/CIFAR-10 test image as a PNG.")
    p.add_argument("--data", default="mnist", choices=("mnist", "cifar10"), help="dataset (mnist)")
    p.add_argument("--data-dir", default=None, help="offline data folder (default $XAITF_DATA_DIR)")
    p.add_argument("--index", type=int, default=0, help="row of the test split (default 0)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    return p


def write_sample(data, index, out, data_dir=None):
    """Write test image ``index`` of ``data`` to ``out`` (PNG); returns ``(path, label)``."""
    from PIL import Image

    from .datasets import load_dataset

    ds = load_dataset(data, data_dir=data_dir, download=False)
    if not 0 <= index < len(ds.x_test):
        raise cli.CliError(f"--index {index}: the {data} test split has {len(ds.x_test)} images "
                           f"(0..{len(ds.x_test) - 1})")
    img = np.asarray(ds.x_test[index], np.uint8)
    img = img[..., 0] if img.shape[-1] == 1 else img
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise cli.CliError(f"--out {out}: expected a .png file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    cli.atomic_write(out, lambda tmp: Image.fromarray(img).save(tmp, format="PNG"))
    return out, int(ds.y_test[index])


def main(argv=None):
    args = build_parser().parse_args(argv)
    path, label = write_sample(args.data, args.index, args.out, args.data_dir)
    print(f"{path}: {args.data} test image {args.index}, label {label}")
    return 0


if __name__ == "__main__":
    cli.run(main)
