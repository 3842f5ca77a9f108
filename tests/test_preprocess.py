"""Preprocessing by name (xaitf.data.preprocess), resize policies (xaitf.data.images) and the
heatmap_script flags that use them: fast, offline."""
import warnings

import numpy as np
import pytest

import xaitf  # noqa: F401
from conftest import make_cnn, run_heatmap
from xaitf.data import images
from xaitf.data.preprocess import PREPROCESS_NAMES, check_name, model_preprocessing, preprocess
from xaitf.errors import InputError

FIXED = (np.arange(2 * 5 * 4 * 3, dtype=np.float32).reshape(2, 5, 4, 3) * 2.1) % 256


# -- preprocess(x, name) --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet50", "resnet", "resnet_v2", "vgg16", "vgg19", "mobilenet",
                                  "mobilenet_v2", "mobilenet_v3", "efficientnet", "inception_v3",
                                  "densenet", "convnext", "xception"])
def test_family_equals_keras_own_preprocess_input(name):
    import keras

    module = {"resnet": "resnet"}.get(name, name)
    expected = getattr(keras.applications, module).preprocess_input(FIXED.copy())
    x = FIXED.copy()
    got = preprocess(x, name)
    assert got.dtype == np.float32 and got.shape == FIXED.shape
    np.testing.assert_array_equal(got, np.asarray(expected, np.float32))
    np.testing.assert_array_equal(x, FIXED)                 # the input is not modified


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_modes_equal_imagenet_utils(mode):
    import keras

    expected = keras.applications.imagenet_utils.preprocess_input(FIXED.copy(), mode=mode)
    np.testing.assert_array_equal(preprocess(FIXED, mode), np.asarray(expected, np.float32))


def test_caffe_by_hand_scale_and_none():
    out = preprocess(FIXED, "caffe")
    bgr_mean = np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(out, FIXED[..., ::-1] - bgr_mean, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(preprocess(FIXED, "scale"), FIXED / np.float32(255))
    np.testing.assert_array_equal(preprocess(FIXED, "SCALE", scale=2.0), FIXED / np.float32(2))
    np.testing.assert_array_equal(preprocess(FIXED, "none"), FIXED)
    np.testing.assert_allclose(preprocess(FIXED, "tf"), FIXED / 127.5 - 1, atol=1e-6)


def test_unknown_name_and_bad_inputs_one_line():
    with pytest.raises(InputError) as e:
        preprocess(FIXED, "resnet51")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("unknown preprocessing 'resnet51'; valid: ")
    assert all(n in msg for n in PREPROCESS_NAMES)
    with pytest.raises(InputError, match="expects RGB images"):
        preprocess(FIXED[..., :1], "resnet50")
    with pytest.raises(InputError, match="NaN or infinite"):
        preprocess(np.full((1, 2, 2, 3), np.nan, np.float32), "scale")
    assert check_name("ResNet-V2") == "resnet_v2"


def test_model_preprocessing_detects_rescaling_and_normalization():
    import keras

    inp = keras.Input((8, 8, 3))
    h = keras.layers.Rescaling(1 / 255.0, name="rescale")(inp)
    out = keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(h)))
    assert model_preprocessing(keras.Model(inp, out)) == "Rescaling layer 'rescale'"
    inp = keras.Input((8, 8, 3))
    norm = keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 1.0, 1.0], name="norm")
    out = keras.layers.Dense(3)(keras.layers.Flatten()(norm(inp)))
    assert model_preprocessing(keras.Model(inp, out)) == "Normalization layer 'norm'"
    assert model_preprocessing(make_cnn()) is None            # a plain CNN: needs preprocessing
    # layers whose numbers say they expect [0, 1] values: the model needs /255 ("scale"), both Kerases
    from xaitf.keras_bridge import tfk

    rng = np.random.default_rng(0)
    for km in (keras, tfk):
        L = km.layers
        unit, byte = L.Normalization(), L.Normalization()
        unit.adapt(rng.random((16, 8, 8, 3)).astype(np.float32))               # x / 255 data
        byte.adapt((rng.random((16, 8, 8, 3)) * 255).astype(np.float32))      # 0..255 data
        for layer, found in [(L.Rescaling(2.0, offset=-1.0), False), (L.Rescaling(1 / 127.5, offset=-1.0), True),
                             (L.Normalization(mean=0.5, variance=0.08), False), (unit, False), (byte, True)]:
            inp = km.Input((8, 8, 3))
            m = km.Model(inp, km.layers.Dense(2)(km.layers.Flatten()(layer(inp))))
            assert (model_preprocessing(m) is not None) == found, (km.__name__, layer.name)
    # preprocess_input called inside the model (its operations, both Kerases): x / 127.5 - 1 and
    # caffe's BGR mean subtraction take 0..255; x * 2 - 1 takes [0, 1]
    for km in (keras, tfk):
        for fn, found in [(km.applications.mobilenet_v2.preprocess_input, "x * 0.007843 + 0"),
                          (km.applications.resnet50.preprocess_input, "x * 1 + [-103.9, -116.8, -123.7]"),
                          (lambda t: t * 2.0 - 1.0, None)]:
            inp = km.Input((8, 8, 3))
            m = km.Model(inp, km.layers.Dense(2)(km.layers.Flatten()(fn(inp))))
            got = model_preprocessing(m)
            assert (got is None) if found is None else got.endswith(f": {found})"), (km.__name__, got)
    # deep in the network (not "near the input") does not count
    inp = keras.Input((4, 4, 1))
    h = inp
    for _ in range(5):
        h = keras.layers.Dense(4)(h)
    out = keras.layers.Flatten()(keras.layers.Rescaling(2.0)(h))
    assert model_preprocessing(keras.Model(inp, out)) is None


# -- resize policies ------------------------------------------------------------------------------
def _photo(h=37, w=53, c=3, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, c)).astype(np.uint8)


def test_pil_policy_is_exactly_pillow_resize_then_convert():
    from PIL import Image

    u8 = _photo()
    got = images.fit_to_model(u8.astype(np.float32), (20, 30, 3), scale=1.0, resize="pil")[0]
    want = np.asarray(Image.fromarray(u8).resize((30, 20)), np.float32)   # Pillow's default filter
    np.testing.assert_array_equal(got, want)
    # gray model: resize the RGB uint8 image first, then Pillow's convert("L") (study 1's order)
    got = images.fit_to_model(u8.astype(np.float32), (21, 21, 1), scale=255.0, resize="pil")[0]
    want = np.asarray(Image.fromarray(u8).resize((21, 21)).convert("L"), np.float32)[..., None]
    np.testing.assert_array_equal(got, want / np.float32(255))
    # not the float-bilinear result of the default: the policies do differ
    other = images.fit_to_model(u8.astype(np.float32), (21, 21, 1), scale=255.0)[0]
    assert np.abs(other - got).max() > 1e-3


def test_float_filters_and_crop():
    from PIL import Image

    a = _photo(40, 80, 1).astype(np.float32)
    for name, code in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC),
                       ("nearest", Image.NEAREST)):
        got = images.fit_to_model(a, (10, 10, 1), scale=1.0, resize=name)[0, ..., 0]
        want = np.asarray(Image.fromarray(a[..., 0], "F").resize((10, 10), code), np.float32)
        np.testing.assert_array_equal(got, want)
    got = images.fit_to_model(a, (10, 10, 1), scale=1.0, resize="crop")[0, ..., 0]
    centre = np.ascontiguousarray(a[:, 20:60, 0])                    # 40x40 centred crop
    want = np.asarray(Image.fromarray(centre, "F").resize((10, 10), Image.BILINEAR), np.float32)
    np.testing.assert_array_equal(got, want)
    assert images.center_crop(np.zeros((30, 10, 1)), 1.0).shape == (10, 10, 1)
    assert images.center_crop(np.zeros((30, 10, 1)), 0.5).shape == (5, 10, 1)


def test_bad_resize_policy_one_line():
    with pytest.raises(InputError) as e:
        images.fit_to_model(_photo(), (8, 8, 3), resize="lanczos3")
    assert str(e.value) == ("unknown resize policy 'lanczos3'; valid: pil, bilinear, bicubic, "
                            "nearest, crop")


# -- heatmap_script flags -------------------------------------------------------------------------
def run_main(capsys, *args):
    return run_heatmap(capsys, *args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("prep")
    model = d / "rgb.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_cnn(shape=(8, 8, 3), classes=4, seed=1).save(model)
    Image.fromarray(_photo(12, 10)).save(d / "a.png")
    Image.fromarray(_photo(9, 14, seed=1)).save(d / "b.png")
    (d / "empty").mkdir()
    return d


def test_cli_unknown_preprocessing_lists_valid_names(files, tmp_path, capsys, restore_settings):
    code, out, err = run_main(capsys, "-ip", files / "a.png", "-mp", files / "rgb.h5", "-hm", "grad",
                              "--preprocess", "resnet51", "-op", tmp_path / "res")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "unknown preprocessing 'resnet51'; valid: " in lines[0]
    assert "resnet50" in lines[0] and "caffe" in lines[0] and out == ""
    assert not (tmp_path / "res").exists()


def test_cli_empty_folder_and_mixed_sizes_one_line(files, tmp_path, capsys, restore_settings):
    code, out, err = run_main(capsys, "-ip", files / "empty", "-mp", files / "rgb.h5", "-hm", "grad",
                              "-op", tmp_path / "res")
    assert code == 1 and err.strip().splitlines() == [
        f"error: image path {files / 'empty'} is a folder with no image files "
        "(png, jpg, jpeg, bmp, gif, tif, tiff, webp, ppm, pgm)"]
    code, out, err = run_main(capsys, "-ip", files / "*.jpg", "-mp", files / "rgb.h5", "-hm", "grad",
                              "-op", tmp_path / "res")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no image files match" in err
    code, out, err = run_main(capsys, "-ip", files / "a.png", files / "b.png", "-mp", files / "rgb.h5",
                              "-hm", "grad", "-op", tmp_path / "res")
    assert code == 1 and err.strip().splitlines() == [
        "error: the images have different sizes (10x12, 14x9): choose how each is fitted to the "
        "model with --resize {pil,bilinear,bicubic,nearest,crop}"]
    assert out == "" and not (tmp_path / "res").exists()


def test_cli_preprocessing_reaches_the_model_and_the_header(files, tmp_path, capsys, restore_settings):
    code, out, err = run_main(capsys, "-ip", files / "a.png", "-mp", files / "rgb.h5", "-hm", "grad",
                              "--preprocess", "tf", "--resize", "nearest", "--save-arrays",
                              "-op", tmp_path / "res", "--budget", "none")
    assert code == 0, err
    assert "(resize nearest), preprocessing tf: x/127.5 - 1" in out
    # the map is the gradient at the tf-preprocessed input: recompute it here
    from xaitf.model_files import load_model

    model = load_model(files / "rgb.h5")
    raw = images.load_image(files / "a.png")
    x = preprocess(images.fit_to_model(raw, (8, 8, 3), scale=1.0, resize="nearest"), "tf")
    saved = np.load(next((tmp_path / "res" / "a").glob("*.npz")))["grad"]
    target = int(out.split("explaining class ")[1].split()[0])
    want = xaitf.create_explainer("grad", model)(x, [target])[0]
    np.testing.assert_allclose(saved, want, rtol=1e-5, atol=1e-6)
    code, out, err = run_main(capsys, "-ip", files / "a.png", "-mp", files / "rgb.h5", "-hm", "grad",
                              "--preprocess", "tf", "--scale", "2", "-op", tmp_path / "res2")
    assert code == 1 and "--scale applies to --preprocess scale only" in err
