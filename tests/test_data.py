"""xaitf.data: MNIST/CIFAR-10 loaders on the offline copies, missing-data errors, SVHN in its real file
formats (built here), and single-image loading/fitting."""

import numpy as np
import pytest
from PIL import Image

from xaitf.data import Dataset, data_dir, images, load_dataset, svhn
from xaitf.data import datasets as dsmod
from xaitf.errors import DataError, InputError

MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # t10k, from the data README


@pytest.fixture
def no_download(monkeypatch):
    """Make the keras.datasets download fail at once (offline and fast), and count its calls."""
    calls = []

    def fail(name):
        calls.append(name)
        raise OSError("URL fetch failure: no network (test)")

    monkeypatch.setattr(dsmod, "_download", fail)
    return calls


# ---- data_dir -------------------------------------------------------------------------------------

def test_data_dir_explicit_env_none(monkeypatch, tmp_path):
    monkeypatch.setenv("XAITF_DATA_DIR", str(tmp_path / "env"))
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv("XAITF_DATA_DIR")
    assert data_dir() is None
    monkeypatch.setenv("XAITF_DATA_DIR", "")
    assert data_dir() is None


# ---- real offline copies ---------------------------------------------------------------------------

def test_mnist_offline_subset(data_dir):
    ds = load_dataset("mnist", data_dir=data_dir, download=False)
    assert isinstance(ds, Dataset) and ds.name == "mnist"
    assert ds.x_train.shape == (8000, 28, 28, 1) and ds.x_test.shape == (2000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    with np.load(data_dir / "mnist_test10k.npz", allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    # disjoint slices in the original order: train = rows 0..7999, test = rows 8000..9999
    np.testing.assert_array_equal(ds.x_train, x[:8000])
    np.testing.assert_array_equal(ds.x_test, x[8000:])
    np.testing.assert_array_equal(np.concatenate([ds.y_train, ds.y_test]), y)
    assert list(np.bincount(np.concatenate([ds.y_train, ds.y_test]))) == MNIST_COUNTS
    assert list(ds.y_train[:5]) == [7, 2, 1, 0, 4]  # the first t10k labels
    assert "mnist_test10k.npz" in ds.source and "rows 8000-9999" in ds.source
    assert ds.split == "train 8000 / test 2000 (from the 10k MNIST test set)"
    assert ds.num_classes == 10 and ds.input_shape == (28, 28, 1)


def test_cifar10_offline_subsets(data_dir):
    ds = load_dataset("cifar10", data_dir=data_dir, download=False)
    assert ds.x_train.shape == (2000, 32, 32, 3) and ds.x_test.shape == (1000, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.y_train.shape == (2000,) and ds.y_test.shape == (1000,)
    # every class present, labels in range; first labels of the real train/test sets
    assert np.all(np.bincount(ds.y_train, minlength=10) > 150) and ds.y_train.max() == 9
    assert np.all(np.bincount(ds.y_test, minlength=10) > 70) and ds.y_test.max() == 9
    assert list(ds.y_train[:5]) == [6, 9, 9, 4, 1] and list(ds.y_test[:5]) == [3, 8, 8, 0, 6]
    assert "cifar10_train2000.npz (CIFAR-10 train[0:2000])" in ds.source
    assert "cifar10_test1000.npz (CIFAR-10 test[0:1000])" in ds.source
    assert ds.split.startswith("train 2000 / test 1000")


def test_env_var_is_used(monkeypatch, data_dir, no_download):
    monkeypatch.setenv("XAITF_DATA_DIR", str(data_dir))
    ds = load_dataset("MNIST")
    assert ds.x_train.shape == (8000, 28, 28, 1) and not no_download


# ---- Keras-style full files ------------------------------------------------------------------------

def test_full_files_preferred_and_normalised(tmp_path, no_download):
    rs = np.random.RandomState(0)
    x_tr = rs.randint(0, 256, (6, 28, 28)).astype(np.uint8)       # Keras' MNIST has no channel axis
    y_tr = np.array([0, 1, 2, 3, 4, 9], dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_tr[:2], y_test=y_tr[:2])
    np.savez(tmp_path / "mnist_test10k.npz", x=np.zeros((10, 28, 28, 1), np.uint8), y=np.zeros(10, np.int64))
    ds = load_dataset("mnist", tmp_path)
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.x_test.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], x_tr)
    assert ds.y_train.dtype == np.int64 and list(ds.y_train) == [0, 1, 2, 3, 4, 9]
    assert "mnist.npz" in ds.source and "mnist_test10k" not in ds.source
    xc = rs.randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    yc = np.array([[3], [1], [0], [9]], dtype=np.uint8)              # Keras' CIFAR-10 labels are (N,1)
    np.savez(tmp_path / "cifar10.npz", x_train=xc, y_train=yc, x_test=xc[:1], y_test=yc[:1])
    dc = load_dataset("cifar10", tmp_path)
    assert dc.y_train.shape == (4,) and list(dc.y_train) == [3, 1, 0, 9] and dc.x_test.shape == (1, 32, 32, 3)
    assert not no_download


def test_malformed_files(tmp_path, no_download):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="lacks the arrays y_train, x_test, y_test"):
        load_dataset("mnist", tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.float32), y_train=np.zeros(2, int),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, int))
    with pytest.raises(DataError, match="expected uint8"):
        load_dataset("mnist", tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.array([0, 10]),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, int))
    with pytest.raises(DataError, match=r"labels must lie in 0..9"):
        load_dataset("mnist", tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1, int),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, int))
    with pytest.raises(DataError, match="cannot read .*mnist.npz"):   # pickles are refused
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", tmp_path)


# ---- missing data ----------------------------------------------------------------------------------

def test_missing_mnist_names_every_place(tmp_path, monkeypatch, no_download):
    monkeypatch.delenv("XAITF_DATA_DIR", raising=False)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    for part in (str(tmp_path), "mnist.npz", "mnist_test10k.npz", "XAITF_DATA_DIR is not set",
                 "--data-dir DIR", "download failed", "URL fetch failure"):
        assert part in msg, part
    assert no_download == ["mnist"]


def test_missing_cifar_env_and_partial(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("XAITF_DATA_DIR", str(tmp_path))
    np.savez(tmp_path / "cifar10_test1000.npz", x=np.zeros((1, 32, 32, 3), np.uint8), y=np.zeros(1, int))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10")
    msg = str(e.value)
    assert f"{tmp_path} (from XAITF_DATA_DIR)" in msg and "found only cifar10_test1000.npz" in msg
    assert "cifar10.npz" in msg and "cifar10_train2000.npz + cifar10_test1000.npz" in msg
    assert "download failed" in msg and "\n" not in msg


def test_no_directory_and_download_false(tmp_path, monkeypatch, no_download):
    monkeypatch.delenv("XAITF_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="no data directory .*XAITF_DATA_DIR is not set.*download failed"):
        load_dataset("mnist")
    with pytest.raises(DataError, match=r"does not exist.*download not attempted \(download=False\)"):
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    assert no_download == ["mnist"]  # download=False never called it


def test_download_true_uses_keras(monkeypatch, tmp_path):
    seen = []
    x6 = np.zeros((6, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x6, y_train=np.zeros(6, int), x_test=x6, y_test=np.zeros(6, int))

    def fake(name):
        seen.append(name)
        x = np.zeros((3, 28, 28), np.uint8)
        arrays = ((x, np.array([1, 2, 3], np.uint8)), (x[:1], np.array([4], np.uint8)))
        return arrays, "keras.datasets.mnist (fake)"

    monkeypatch.setattr(dsmod, "_download", fake)
    ds = load_dataset("mnist", data_dir=tmp_path, download=True)   # the folder's 6 images are ignored
    assert seen == ["mnist"] and ds.x_train.shape == (3, 28, 28, 1)
    assert ds.source == "keras.datasets.mnist (fake)" and list(ds.y_train) == [1, 2, 3]
    assert ds.split.startswith("train 3 / test 1")


# ---- SVHN format 1: digitStruct.mat written the way MATLAB v7.3 writes it -------------------------

def _mat_attrs(obj, cls):
    obj.attrs["MATLAB_class"] = np.bytes_(cls)


def write_digit_struct(path, records):
    """A MATLAB v7.3 file (HDF5 with MATLAB's 512-byte header) holding a 1xN struct array
    digitStruct(name, bbox). Data lives under /#refs#; name and bbox are (N,1) reference arrays.
    Per image a bbox struct with fields (k,1): the double itself when k == 1, references to (1,1)
    doubles when k > 1. ``records``: [(name, [(label, left, top, width, height), ...]), ...]."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = iter(range(10**6))

        def stored(data, cls="double", **attrs):
            ds = refs.create_dataset(f"r{next(counter)}", data=data)
            _mat_attrs(ds, cls)
            for k, v in attrs.items():
                ds.attrs[k] = v
            return ds.ref

        top = f.create_group("digitStruct")
        _mat_attrs(top, "struct")
        name_refs, bbox_refs = [], []
        for name, boxes in records:
            codes = np.array([ord(c) for c in name], dtype=np.uint16)[:, None]       # (len,1) char
            name_refs.append(stored(codes, "char", MATLAB_int_decode=np.int32(2)))
            g = refs.create_group(f"g{next(counter)}")
            _mat_attrs(g, "struct")
            for j, field in enumerate(svhn.FIELDS):
                vals = [float(b[j]) for b in boxes]
                if len(vals) == 1:
                    ds = g.create_dataset(field, data=np.array([[vals[0]]]))          # scalar (1,1)
                    _mat_attrs(ds, "double")
                else:
                    r = np.array([[stored(np.array([[v]]))] for v in vals], dtype=h5py.ref_dtype)
                    ds = g.create_dataset(field, data=r)                              # (k,1) refs
                    _mat_attrs(ds, "cell")
            bbox_refs.append(g.ref)
        for field, rlist in (("name", name_refs), ("bbox", bbox_refs)):
            ds = top.create_dataset(field, data=np.array(rlist, dtype=h5py.ref_dtype)[:, None])
            _mat_attrs(ds, "cell")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM")


def _pattern(h, w):
    """A uint8 image whose pixels say where they came from: R = column + 1, G = row + 1, B = 77."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :] + 1
    img[..., 1] = np.arange(h)[:, None] + 1
    img[..., 2] = 77
    return img


SVHN_RECORDS = [  # (png, boxes (label, left, top, width, height), image (H, W))
    ("1.png", [(1, 12, 6, 12, 12)], (30, 40)),                     # one digit: scalar fields
    ("2.png", [(2, 3, 3, 4, 6), (10, 8, 3, 4, 6)], (16, 20)),      # "20": the 0 stored as 10
    ("3.png", [(1, 3, 5, 8, 16), (2, 9, 4, 6, 12)], (20, 30)),     # "12": both 1 and 2
    ("4.png", [(3, 5, 5, 4, 6)], (16, 16)),
    ("5.png", [(5, 2, 2, 3, 5), (10, 6, 2, 3, 5), (7, 10, 2, 3, 5)], (12, 16)),   # "507"
    ("6.png", [(2, 4, 4, 4, 6)], (16, 16)),
]


@pytest.fixture
def svhn_folder(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    write_digit_struct(folder / "digitStruct.mat", [(n, b) for n, b, _ in SVHN_RECORDS])
    for name, _, (h, w) in SVHN_RECORDS:
        Image.fromarray(_pattern(h, w)).save(folder / name)
    return folder


def test_digit_struct_reader(svhn_folder):
    import scipy.io.matlab
    assert scipy.io.matlab.matfile_version(str(svhn_folder / "digitStruct.mat")) == (2, 0)  # = v7.3
    recs = svhn.load_digit_struct(svhn_folder / "digitStruct.mat")
    assert [r["name"] for r in recs] == [n for n, _, _ in SVHN_RECORDS]
    assert recs[0]["boxes"] == [(1, 12.0, 6.0, 12.0, 12.0)]                         # scalar fields
    assert recs[1]["boxes"] == [(2, 3.0, 3.0, 4.0, 6.0), (0, 8.0, 3.0, 4.0, 6.0)]    # refs, 10 -> 0
    assert [b[0] for b in recs[4]["boxes"]] == [5, 0, 7]
    assert all(isinstance(b[0], int) for r in recs for b in r["boxes"])
    assert len(svhn.load_digit_struct(svhn_folder / "digitStruct.mat", limit=2)) == 2


def test_crop_to_digits_exact_window_and_padding():
    img = _pattern(24, 40)
    boxes = [(1, 4, 3, 5, 9), (0, 11, 5, 6, 11)]
    # union x 4..17, y 3..16; margin 10 -> window x -6..27, y -7..26: 33 x 33
    assert svhn.union_box(boxes, 10) == (-6, -7, 27, 26)
    crop, new = svhn.crop_to_digits(img, boxes, size=33, margin=10)   # size = window: no resampling
    expected = np.zeros((33, 33, 3), np.uint8)
    expected[7:31, 6:33] = img[0:24, 0:27]      # image rows 0..23 -> crop rows 7..30; cols 0..26 -> 6..32
    np.testing.assert_array_equal(crop, expected)
    assert new == [(1, 10.0, 10.0, 5.0, 9.0), (0, 17.0, 12.0, 6.0, 11.0)]
    # size 66: scale 2 on both axes
    crop2, new2 = svhn.crop_to_digits(img, boxes, size=66, margin=10)
    assert crop2.shape == (66, 66, 3) and crop2.dtype == np.uint8
    assert new2 == [(1, 20.0, 20.0, 10.0, 18.0), (0, 34.0, 24.0, 12.0, 22.0)]
    # 2x bilinear: output row j samples rows (j+0.5)/2-0.5; rows 0..12 see only the 7 padded rows,
    # columns 0..10 only the 6 padded columns; row 13 / column 11 already mix in the image
    assert crop2[:13].max() == 0 and crop2[:, :11].max() == 0
    assert crop2[13, 11:, 2].min() > 0 and crop2[13:63, 11, 2].min() > 0
    # bilinear weights: row 13 = 1/4 image row 0, column 11 = 1/4 image column 0 -> B = 77/4, 77/16
    assert crop2[13, 20, 2] == 19 and crop2[13, 11, 2] == 5 and crop2[20, 20, 2] == 77
    # the bottom 2 rows of the window are padding too: the last output rows are black
    assert crop2[-3:].max() == 0 and crop2[-6, 20, 2] == 77


def test_crop_to_digits_anisotropic_scale():
    img = np.full((8, 12), 200, np.uint8)   # gray
    # window: x 2-1 .. 10+1 = 1..11 (10 wide), y 1-1 .. 5+1 = 0..6 (6 tall); size 30: sx 3, sy 5
    crop, new = svhn.crop_to_digits(img, [(7, 2, 1, 8, 4)], size=30, margin=1)
    assert crop.shape == (30, 30) and np.all(crop == 200)     # the window lies inside the image
    assert new == [(7, 3.0, 5.0, 24.0, 20.0)]
    mask = svhn.boxes_mask(new, (30, 30))
    assert mask.sum() == 24 * 20 and mask[5:25, 3:27].all()
    with pytest.raises(InputError, match="at least one digit box"):
        svhn.crop_to_digits(img, [], 30)


def test_format1_loader_boxes_and_labels(svhn_folder):
    d = svhn.load_svhn_format1(svhn_folder, size=64, target_digit=1, balance=False)
    x, y, boxes = d                                      # unpacks as (images, labels, boxes)
    assert x.shape == (6, 64, 64, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert list(y) == [1, 0, 1, 0, 0, 0] and d.names == [n for n, _, _ in SVHN_RECORDS]
    # 1.png (40x30): box x 12..24, y 6..18; margin 10 -> window x 2..34, y -4..28 (32 x 32), scale 2
    assert boxes[0] == [(1, 20.0, 20.0, 24.0, 24.0)]
    # 3.png (30x20): union x 3..15, y 4..21 -> window x -7..25, y -6..31: 32 x 37
    sy = 64 / 37
    assert boxes[2][0] == pytest.approx((1, 20.0, 11 * sy, 16.0, 16 * sy))
    assert boxes[2][1] == pytest.approx((2, 32.0, 10 * sy, 12.0, 12 * sy))
    # crop content of 1.png: window rows -4..-1 are black padding (output rows 0..6 at scale 2);
    # inside, the green channel counts image rows: output row 63 samples window row 31.25 = image row 27.25
    assert x[0, :7].max() == 0 and x[0, 9:, :, 2].min() == 77   # row 8 still mixes in padding
    assert x[0, 40, 40, 0] == pytest.approx(2 + 19.75 + 1, abs=1)   # column 2 + (40+0.5)/2-0.5
    assert [b[0] for b in boxes[1]] == [2, 0]                        # 10 -> 0 in the boxes too
    assert "SVHN format 1" in d.source and "digitStruct.mat" in d.source


def test_format1_balancing_and_modes(svhn_folder):
    pos = {"1.png", "3.png"}
    subsets = set()
    for seed in range(8):
        d = svhn.load_svhn_format1(svhn_folder, size=16, target_digit=1, balance=True, seed=seed)
        assert list(np.bincount(d.labels)) == [2, 2]
        assert {n for n, l in zip(d.names, d.labels) if l == 1} == pos
        assert d.names == sorted(d.names)                          # file order kept
        subsets.add(tuple(d.names))
    again = svhn.load_svhn_format1(svhn_folder, size=16, balance=True, seed=3)
    assert again.names == svhn.load_svhn_format1(svhn_folder, size=16, balance=True, seed=3).names
    assert len(subsets) > 1                                        # the seed picks the negatives
    # target digit 0: present in 2.png and 5.png (stored as 10)
    z = svhn.load_svhn_format1(svhn_folder, size=16, target_digit=0, balance=False)
    assert [n for n, l in zip(z.names, z.labels) if l == 1] == ["2.png", "5.png"]
    # one-vs-two: 1.png (a 1), 2.png and 6.png (a 2); 3.png has both and is dropped
    o = svhn.load_svhn_format1(svhn_folder, size=16, mode="one_vs_two", balance=False)
    assert o.names == ["1.png", "2.png", "6.png"] and list(o.labels) == [1, 0, 0]
    ob = svhn.load_svhn_format1(svhn_folder, size=16, mode="one_vs_two", balance=True, seed=0)
    assert list(np.bincount(ob.labels)) == [1, 1] and "1.png" in ob.names
    lim = svhn.load_svhn_format1(svhn_folder, size=16, balance=False, limit=3)
    assert lim.names == ["1.png", "2.png", "3.png"]
    with pytest.raises(DataError, match="cannot balance"):
        svhn.load_svhn_format1(svhn_folder, size=16, target_digit=9)
    with pytest.raises(InputError, match="unknown mode"):
        svhn.load_svhn_format1(svhn_folder, mode="odd")


def test_svhn_missing_files(tmp_path, svhn_folder):
    with pytest.raises(DataError, match=r"digitStruct.mat not found: .*ufldl.stanford.edu.*non-commercial"):
        svhn.load_svhn_format1(tmp_path)
    with pytest.raises(DataError, match=r"format 2 file not found: .*nope_32x32.mat.*not downloaded"):
        svhn.load_svhn_format2(tmp_path / "nope_32x32.mat")
    (svhn_folder / "4.png").unlink()
    with pytest.raises(DataError, match=r"image not found: .*4.png"):
        svhn.load_svhn_format1(svhn_folder, balance=False)
    import scipy.io
    scipy.io.savemat(tmp_path / "digitStruct.mat", {"a": np.zeros(2)})   # v5, not v7.3
    with pytest.raises(DataError, match="MATLAB v7.3"):
        svhn.load_digit_struct(tmp_path / "digitStruct.mat")


def test_format2_loader(tmp_path):
    import scipy.io
    rs = np.random.RandomState(1)
    X = rs.randint(0, 256, (32, 32, 3, 5)).astype(np.uint8)
    y = np.array([[10], [1], [9], [10], [3]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": y})    # MATLAB v5, as SVHN ships
    x, lab = svhn.load_svhn_format2(tmp_path / "test_32x32.mat")
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8 and lab.dtype == np.int64
    assert list(lab) == [0, 1, 9, 0, 3]
    for i in range(5):
        np.testing.assert_array_equal(x[i], X[:, :, :, i])


# ---- single images ---------------------------------------------------------------------------------

@pytest.fixture
def pngs(tmp_path):
    rs = np.random.RandomState(0)
    gray = rs.randint(0, 256, (17, 23)).astype(np.uint8)
    rgb = rs.randint(0, 256, (13, 29, 3)).astype(np.uint8)
    rgba = rs.randint(0, 256, (11, 9, 4)).astype(np.uint8)
    paths = {}
    for name, arr in (("gray", gray), ("rgb", rgb), ("rgba", rgba)):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(arr).save(paths[name])
    return paths, {"gray": gray, "rgb": rgb, "rgba": rgba}


def test_load_image_modes(pngs):
    paths, arrays = pngs
    g = images.load_image(paths["gray"])
    assert g.shape == (17, 23, 1) and g.dtype == np.float32
    np.testing.assert_array_equal(g[..., 0], arrays["gray"])
    c = images.load_image(paths["rgb"])
    assert c.shape == (13, 29, 3)
    np.testing.assert_array_equal(c, arrays["rgb"])
    a = images.load_image(paths["rgba"])
    assert a.shape == (11, 9, 3)
    np.testing.assert_array_equal(a, arrays["rgba"][..., :3])      # alpha dropped


def test_load_image_16_bit_and_float_gray(tmp_path):
    """16-bit gray and [0, 1] float gray come back on the 0..255 scale of 8-bit files; float data
    beyond 1 is taken as 0..255 values (clipped); NaN is refused in one line."""
    ramp = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(tmp_path / "g16.png")
    np.testing.assert_allclose(images.load_image(tmp_path / "g16.png")[..., 0], ramp * 255, atol=0.01)
    Image.fromarray(ramp, "F").save(tmp_path / "unit.tif")
    np.testing.assert_allclose(images.load_image(tmp_path / "unit.tif")[..., 0], ramp * 255, rtol=1e-6)
    Image.fromarray(ramp * 300, "F").save(tmp_path / "big.tif")
    np.testing.assert_allclose(images.load_image(tmp_path / "big.tif")[..., 0], np.minimum(ramp * 300, 255))
    Image.fromarray(np.full((3, 4), np.nan, np.float32), "F").save(tmp_path / "nan.tif")
    with pytest.raises(InputError, match="NaN or infinite"):
        images.load_image(tmp_path / "nan.tif")


def test_fit_to_model_shapes_and_channels(pngs):
    paths, arrays = pngs
    for name in ("gray", "rgb", "rgba"):
        img = images.load_image(paths[name])
        for shape in ((28, 28, 1), (32, 32, 3), (227, 227, 1)):
            out = images.fit_to_model(img, shape)
            assert out.shape == (1,) + shape and out.dtype == np.float32
            assert 0 <= out.min() and out.max() <= 1.0 + 1e-6
    # gray -> RGB replicates; same size is an exact copy; scale divides
    g = images.load_image(paths["gray"])
    out = images.fit_to_model(g, (17, 23, 3), scale=1.0)
    np.testing.assert_array_equal(out[0, ..., 0], arrays["gray"])
    np.testing.assert_array_equal(out[0, ..., 1], out[0, ..., 2])
    np.testing.assert_allclose(images.fit_to_model(g, (None, 17, 23, 1), scale=2.0)[0, ..., 0],
                               arrays["gray"] / 2.0)
    # RGB -> gray by luminance (a constant colour is unchanged by any resize)
    const = np.zeros((9, 14, 3), np.float32) + np.array([200.0, 100.0, 50.0], np.float32)
    lum = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    np.testing.assert_allclose(images.fit_to_model(const, (28, 28, 1), scale=1.0), lum, rtol=1e-5)
    # a 2x2 checkerboard upsampled stays within its range and keeps its mean
    big = images.fit_to_model(np.array([[0.0, 255.0], [255.0, 0.0]]), (4, 4, 1), scale=1.0)
    assert big.min() >= 0 and big.max() <= 255 and big.mean() == pytest.approx(127.5, abs=1e-3)
    # an RGBA array: alpha dropped before the luminance
    rgba = np.concatenate([const, np.full((9, 14, 1), 7.0, np.float32)], axis=2)
    np.testing.assert_allclose(images.fit_to_model(rgba, (5, 5, 1), scale=1.0), lum, rtol=1e-5)
    np.testing.assert_allclose(images.fit_to_model(rgba, (5, 5, 3), scale=1.0)[0, 2, 2], [200, 100, 50])
    with pytest.raises(InputError, match=r"\(H,W,1\) or \(H,W,3\)"):
        images.fit_to_model(g, (28, 28, 2))
    with pytest.raises(InputError, match="NaN"):
        images.fit_to_model(np.full((4, 4), np.nan), (4, 4, 1))


def test_load_image_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("this is not an image")
    with pytest.raises(InputError) as e:
        images.load_image(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    trunc = tmp_path / "trunc.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8) + 9).save(trunc)
    trunc.write_bytes(trunc.read_bytes()[:60])
    with pytest.raises(InputError, match="cannot read image"):
        images.load_image(trunc)
    with pytest.raises(InputError, match="image file not found"):
        images.load_image(tmp_path / "missing.jpg")


def test_random_image_is_study1_default():
    r = images.random_image()
    assert r.shape == (227, 227) and np.issubdtype(r.dtype, np.floating)
    np.testing.assert_array_equal(r, np.random.RandomState(0).randint(0, 256, (227, 227)))  # = randint(256, size=...)
    out = images.fit_to_model(r, (227, 227, 1))
    np.testing.assert_allclose(out[0, ..., 0], r / 255.0, rtol=1e-6)
    assert not np.array_equal(images.random_image(8, 1), images.random_image(8, 0))
