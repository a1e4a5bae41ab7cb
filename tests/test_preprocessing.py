import os
import pathlib
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image, JpegImagePlugin
from sklearn.exceptions import NotFittedError

from sklearn_imgretrieval import ImageHasher, ImagePreprocessor

RNG = np.random.default_rng(0)


def _photo(height=24, width=32):
    """A smooth colour image (JPEG-friendly), uint8 (H, W, 3)."""
    yy, xx = np.mgrid[0:height, 0:width]
    channels = [np.sin(xx / 5.0), np.cos(yy / 4.0), np.sin((xx + yy) / 7.0)]
    return ((np.stack(channels, axis=-1) * 0.5 + 0.5) * 255).astype(np.uint8)


# ------------------------------------------------------------- input kinds
def test_uint8_arrays_are_scaled_and_floats_passed_through():
    images = RNG.integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    rows = ImagePreprocessor().fit_transform(images)
    assert rows.dtype == np.float32 and rows.shape == (3, 90)
    np.testing.assert_allclose(rows, images.reshape(3, -1) / 255, rtol=1e-6)
    floats = RNG.normal(size=(3, 5, 6)).astype(np.float64)
    np.testing.assert_allclose(ImagePreprocessor().fit_transform(floats), floats.reshape(3, -1), rtol=1e-6)


def test_output_never_shares_memory_with_the_input():
    images = RNG.random((4, 6, 6, 1), dtype=np.float32)
    before = images.copy()
    out = ImagePreprocessor().fit_transform(images)
    assert not np.shares_memory(out, images)
    out += 1
    np.testing.assert_array_equal(images, before)


@pytest.mark.parametrize(
    "make_input, advice",
    [
        (lambda images: images * 255, r"from 0 to 255, .* divide them by 255, or pass them as uint8"),
        (lambda images: [image * 255 for image in images], r"from 0 to 126.5, .* divide them by 255"),
        (lambda images: images * 2 - 1, r"from -1 to 1, .* map them back with \(X \+ 1\) / 2"),
        (lambda images: images.reshape(len(images), -1) * 255, r"from 0 to 255, .* divide them by 255"),
    ],
    ids=["0-255", "list-0-255", "minus-1-to-1", "rows-0-255"],
)
def test_float_pixels_outside_the_unit_range_are_warned_about_with_the_fix(make_input, advice):
    images = np.linspace(0, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    pre = ImagePreprocessor().fit(images)
    with pytest.warns(UserWarning, match="ImagePreprocessor was given float pixels " + advice):
        out = pre.transform(make_input(images))
    assert out.min() < 0 or out.max() > 1  # passed through, as documented, with the warning


def test_pixels_in_the_unit_range_and_integers_are_not_warned_about():
    images = np.linspace(0, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    overshoot = images * 1.2 - 0.1  # what sharp resampling does at edges: -0.1 to 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for X in (images, overshoot, (images * 255).astype(np.uint8), (images * 255).astype(np.int64)):
            ImagePreprocessor().fit_transform(X)


def test_two_d_rows_shape_rules():
    assert ImagePreprocessor().fit(np.zeros((2, 64))).image_shape_ == (8, 8, 1)
    assert ImagePreprocessor().fit(np.zeros((2, 48))).image_shape_ == (4, 4, 3)
    assert ImagePreprocessor().fit(np.zeros((2, 10))).image_shape_ == (1, 10, 1)
    assert ImagePreprocessor(image_shape=(2, 5)).fit(np.zeros((2, 10))).image_shape_ == (2, 5, 1)
    with pytest.raises(ValueError, match=r"image_shape=\(3, 3\) holds 9 values"):
        ImagePreprocessor(image_shape=(3, 3)).fit(np.zeros((2, 10)))
    # one side may be -1, as in numpy.reshape
    assert ImagePreprocessor(image_shape=(2, -1)).fit(np.zeros((2, 10))).image_shape_ == (2, 5, 1)
    assert ImagePreprocessor(image_shape=(2, 1, -1)).fit(np.zeros((2, 6))).image_shape_ == (2, 1, 3)


def test_three_d_and_flatten_false():
    images = RNG.random((2, 7, 9))
    out = ImagePreprocessor(flatten=False).fit_transform(images)
    assert out.shape == (2, 7, 9, 1)


def test_list_of_arrays_of_different_sizes_needs_size():
    images = [RNG.random((10, 12)), RNG.random((6, 8))]
    with pytest.raises(ValueError, match=r"different sizes.*Set size=\(height, width\)"):
        ImagePreprocessor().fit(images)
    out = ImagePreprocessor(size=(4, 4)).fit_transform(images)
    assert out.shape == (2, 16)


def test_pil_images_and_color_modes():
    photo = _photo()
    images = [Image.fromarray(photo), Image.fromarray(photo).convert("L")]
    keep = ImagePreprocessor().fit(images)
    assert keep.image_shape_ == (24, 32, 3)  # colour wins in "keep"
    gray = ImagePreprocessor(color_mode="grayscale").fit_transform(images)
    expected = np.asarray(Image.fromarray(photo).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(gray[0], expected.ravel(), atol=1e-6)
    rgb = ImagePreprocessor(color_mode="rgb").fit_transform(images[1:])
    assert rgb.shape == (1, 24 * 32 * 3)
    r, g, b = rgb.reshape(24, 32, 3).transpose(2, 0, 1)
    np.testing.assert_array_equal(r, g) and np.testing.assert_array_equal(g, b)


def test_grayscale_of_arrays_matches_pillow():
    photo = _photo()
    ours = ImagePreprocessor(color_mode="grayscale").fit_transform(photo[None])
    pillow = np.asarray(Image.fromarray(photo).convert("L"), dtype=np.float32) / 255
    # Pillow rounds to uint8; ours keeps the float
    np.testing.assert_allclose(ours.reshape(24, 32), pillow, atol=1 / 255 + 1e-6)


def test_center_crop_then_resize():
    image = np.zeros((1, 20, 40), dtype=np.float32)
    image[0, :, 10:30] = 1.0  # the centre square is all ones
    out = ImagePreprocessor(crop="center", size=(5, 5), flatten=False).fit_transform(image)
    assert out.shape == (1, 5, 5, 1)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)
    assert ImagePreprocessor(crop="center").fit(image).image_shape_ == (20, 20, 1)


# ------------------------------------------------------------------ files
FORMATS = [
    ("png", "RGB"), ("jpg", "RGB"), ("bmp", "RGB"), ("gif", "P"), ("webp", "RGB"),
    ("tiff", "RGB"), ("png", "RGBA"), ("png", "LA"), ("png", "P"), ("tiff", "CMYK"), ("jpg", "L"),
]  # fmt: skip


@pytest.mark.parametrize("ext, mode", FORMATS, ids=[f"{e}-{m}" for e, m in FORMATS])
def test_files_of_every_format_decode_like_pillow(tmp_path, ext, mode):
    path = tmp_path / f"image.{ext}"
    Image.fromarray(_photo()).convert(mode).save(path)
    out = ImagePreprocessor(color_mode="rgb").fit_transform([path])
    with Image.open(path) as reference:
        expected = np.asarray(reference.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(out.reshape(24, 32, 3), expected, atol=1e-6)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 24 * 32).reshape(24, 32).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    out = ImagePreprocessor().fit_transform([path])
    np.testing.assert_allclose(out.reshape(24, 32), values / 65535, atol=1e-6)
    rgb = ImagePreprocessor(color_mode="rgb", size=(12, 16)).fit_transform([path])
    assert rgb.shape == (1, 12 * 16 * 3) and 0.4 < rgb.mean() < 0.6


def test_gif_first_frame(tmp_path):
    frames = [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = ImagePreprocessor(color_mode="grayscale").fit_transform([path])
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    photo = _photo(24, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(photo).save(path, exif=exif, quality=95)
    pre = ImagePreprocessor(flatten=False).fit([path])
    assert pre.image_shape_ == (32, 24, 3)
    out = pre.transform([path])[0]
    expected = np.rot90(photo, k=-1) / 255
    assert np.abs(out - expected).mean() < 0.02


def test_jpeg_draft_mode_when_shrinking(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.kron(_photo(60, 80), np.ones((8, 8, 1), dtype=np.uint8))).save(path, quality=95)
    requests = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        requests.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = ImagePreprocessor(size=(60, 80)).fit_transform([path])
    assert requests == [(80, 60)]
    with Image.open(path) as image:
        full = np.asarray(image.resize((80, 60), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    assert np.abs(out.reshape(60, 80, 3) - full).mean() < 0.01


def test_parallel_equals_serial_and_path_kinds(tmp_path):
    paths = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.roll(_photo(), i, axis=1)).save(path)
        paths.append(path if i % 2 else str(path))
    serial = ImagePreprocessor(size=(12, 16)).fit_transform(paths)
    parallel = ImagePreprocessor(size=(12, 16), n_jobs=2).fit_transform(paths)
    np.testing.assert_array_equal(serial, parallel)
    series = ImagePreprocessor(size=(12, 16)).fit_transform(pd.Series([str(p) for p in paths]))
    np.testing.assert_array_equal(series, serial)


def test_feature_names_and_pandas_output():
    images = RNG.random((2, 2, 3, 3), dtype=np.float32)
    pre = ImagePreprocessor().fit(images)
    names = pre.get_feature_names_out()
    assert len(names) == 18 and names[0] == "pixel_0_0_r" and names[-1] == "pixel_1_2_b"
    frame = ImagePreprocessor().set_output(transform="pandas").fit_transform(images)
    assert list(frame.columns) == list(names)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf(bad):
    images = RNG.random((2, 4, 4))
    images[1, 2, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        ImagePreprocessor().fit(images)
    with pytest.raises(ValueError, match="NaN|infinity"):
        ImagePreprocessor().fit(images.reshape(2, -1))


def test_empty_input():
    with pytest.raises(ValueError, match="No images given"):
        ImagePreprocessor().fit([])
    with pytest.raises(ValueError, match="No images given"):
        ImagePreprocessor().fit(np.zeros((0, 4, 4)))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 3, 2)])
def test_wrong_number_of_dimensions(shape):
    with pytest.raises(ValueError, match=f"got an array with {len(shape)} dimension"):
        ImagePreprocessor().fit(np.zeros(shape))


def test_a_single_path_must_be_wrapped_in_a_list(tmp_path):
    with pytest.raises(TypeError, match=r"Wrap it in a list"):
        ImagePreprocessor().fit(str(tmp_path / "x.png"))


def test_unreadable_files_are_all_named(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_photo()).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    text = tmp_path / "text.png"
    text.write_text("hello")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"
    paths = [good, corrupt, text, empty, missing]
    with pytest.raises(ValueError) as error:
        ImagePreprocessor(size=(8, 8)).fit(paths)
    message = str(error.value)
    assert "4 of 5 images" in message and "good.png" not in message
    for path in (corrupt, text, empty):
        assert f"{path}: not an image Pillow can read" in message
    assert f"{missing}: no such file" in message
    assert "load_image_folder(..., verify=True)" in message
    # transform reports too, and never drops rows silently
    pre = ImagePreprocessor(size=(8, 8)).fit([good])
    with pytest.raises(ValueError, match="corrupt.jpg"):
        pre.transform([good, corrupt])
    assert pre.transform([good, good]).shape == (2, 192)


def test_transform_before_fit_and_size_mismatch():
    with pytest.raises(NotFittedError):
        ImagePreprocessor().transform(np.zeros((1, 4, 4)))
    pre = ImagePreprocessor().fit(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match=r"fitted on 4x4.*Set size"):
        pre.transform(np.zeros((1, 5, 5)))


def test_mixed_paths_and_arrays(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_photo()).save(path)
    with pytest.raises(TypeError, match="mixes file paths with in-memory images"):
        ImagePreprocessor().fit([path, _photo()])
    with pytest.raises(TypeError, match="Every element of X"):
        ImagePreprocessor().fit([_photo(), 3])


def test_invalid_parameters():
    with pytest.raises(ValueError, match="size must be None or a pair"):
        ImagePreprocessor(size=(0, 4)).fit(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="color_mode"):
        ImagePreprocessor(color_mode="cmyk").fit(np.zeros((1, 4, 4)))
    assert os.fspath(pathlib.Path("x")) == "x"


# ------------------------------------------------- pixel scaling rules
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_other_integer_types_holding_8_bit_values_scale_like_uint8(dtype):
    images = RNG.integers(0, 128, size=(2, 4, 5), dtype=np.uint8)
    images[0, 0, 0] = 127 if dtype == np.int8 else 255
    expected = ImagePreprocessor().fit_transform(images)
    np.testing.assert_array_equal(ImagePreprocessor().fit_transform(images.astype(dtype)), expected)
    rows = images.reshape(2, -1).astype(dtype)  # the 2-D path keeps the type too
    np.testing.assert_array_equal(ImagePreprocessor().fit_transform(rows), expected)
    as_list = ImagePreprocessor().fit_transform(list(images.astype(dtype)))
    np.testing.assert_array_equal(as_list, expected)


@pytest.mark.parametrize("dtype, low, high", [(np.int8, -1, 5), (np.int64, 0, 256), (np.uint32, 0, 70000)])
def test_integers_outside_8_bits_are_refused_with_their_range(dtype, low, high):
    images = np.zeros((1, 2, 2), dtype=dtype)
    images[0, 0] = low, high
    message = rf"{np.dtype(dtype).name} pixels range from {low} to {high}.*cast 16-bit images to uint16"
    with pytest.raises(ValueError, match=message):
        ImagePreprocessor().fit(images)
    with pytest.raises(ValueError, match=message):
        ImagePreprocessor().fit(images.reshape(1, -1))
    with pytest.raises(ValueError, match=rf"array of shape \(2, 2\): {message}"):
        ImagePreprocessor().fit_transform(list(images))


def test_bool_images_are_zero_or_one():
    images = np.eye(3, dtype=bool)[None]
    np.testing.assert_array_equal(ImagePreprocessor().fit_transform(images), np.eye(3, dtype=np.float32).reshape(1, -1))


def test_floats_beyond_float32_or_not_finite_are_refused_on_every_path():
    huge = np.full((1, 2, 2), 1e300)
    for X in (huge, huge.reshape(1, -1)):
        with pytest.raises(ValueError, match="beyond float32's range"):
            ImagePreprocessor().fit_transform(X)
    pre = ImagePreprocessor().fit(np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="beyond float32's range"):
        pre.transform(huge)
    with pytest.raises(ValueError, match=r"array of shape \(2, 2\): pixels include NaN or infinity"):
        ImagePreprocessor().fit_transform([np.zeros((2, 2)), np.full((2, 2), np.nan)])


def test_thirty_two_bit_and_float_files(tmp_path):
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 1_000_000]], dtype=np.int32)).save(wide)
    sixteen = tmp_path / "sixteen.tif"
    Image.fromarray(np.array([[0, 65535]], dtype=np.int32)).save(sixteen)
    nan = tmp_path / "nan.tif"
    Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32)).save(nan)
    with Image.open(wide) as image:
        assert image.mode == "I"
    with pytest.raises(ValueError, match=rf"{wide}: 32-bit integer pixels range from 0 to 1000000"):
        ImagePreprocessor().fit_transform([wide])
    np.testing.assert_array_equal(ImagePreprocessor().fit_transform([sixteen]), [[0.0, 1.0]])
    with pytest.raises(ValueError, match=rf"{nan}: pixels include NaN or infinity"):
        ImagePreprocessor().fit_transform([nan])


def test_arrays_of_other_channel_counts_and_bytes_paths_are_named():
    with pytest.raises(ValueError, match=r"array of shape \(16, 16, 5\): has 5 channels; images have 1"):
        ImagePreprocessor(size=(16, 16)).fit([np.zeros((16, 16, 1)), np.zeros((16, 16, 5))])
    pre = ImagePreprocessor(size=(4, 4)).fit([np.zeros((16, 16, 1))])
    with pytest.raises(ValueError, match="has 5 channels"):
        pre.transform([np.zeros((16, 16, 5))])
    for paths in ([b"/photos/a.jpg"], np.array([b"/photos/a.jpg"])):
        with pytest.raises(TypeError, match=r"X holds bytes; file paths must be str.*os.fsdecode"):
            ImagePreprocessor().fit(paths)


def test_an_absurd_size_is_refused_at_fit_with_the_memory_it_needs():
    with pytest.raises(
        ValueError, match=r"100000x100000 .*111.8 GiB of float32 per image \(3 channels\).*MAX_IMAGE_PIXELS"
    ):
        ImagePreprocessor(size=(100_000, 100_000)).fit(np.zeros((1, 4, 4, 3)))
    assert ImagePreprocessor(size=(2000, 2000)).fit(np.zeros((1, 4, 4))).image_shape_ == (2000, 2000, 1)
    fitted = ImagePreprocessor(size=(4, 4)).fit(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match=r"100000x100000 .*37.3 GiB of float32 per image \(1 channel\)"):
        fitted.set_params(size=(100_000, 100_000)).transform(np.zeros((1, 4, 4)))  # before resizing to it


@pytest.mark.parametrize(
    "images",
    [
        np.broadcast_to(np.uint8(0), (1, 100_000, 100_000)),  # a view: NumPy holds it in one byte
        np.broadcast_to(np.float32(0), (1, 100_000, 100_000, 3)),
        [np.broadcast_to(np.uint8(0), (100_000, 100_000))],
        np.broadcast_to(np.uint8(0), (1, 10**10)),  # a flattened square image
    ],
    ids=["3-d", "4-d-float", "list", "rows"],
)
def test_arrays_over_pillows_pixel_limit_are_refused_before_any_copy(images):
    # Without the check, transform made 37 GiB of float32 from the one-byte view before failing.
    message = r"100000x100000 pixels \(10,000,000,000\) are more than PIL.Image.MAX_IMAGE_PIXELS \(89,478,485\)"
    for estimator in (ImagePreprocessor(size=(8, 8)), ImageHasher()):
        with pytest.raises(ValueError, match=message):
            estimator.fit_transform(images)
    fitted = ImagePreprocessor(size=(8, 8)).fit(np.zeros((1, 16, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match=message):
        fitted.transform(images)


def test_arrays_within_pillows_pixel_limit_are_read(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16 * 16)
    assert ImagePreprocessor(size=(4, 4)).fit_transform(np.zeros((1, 16, 16), dtype=np.uint8)).shape == (1, 16)
    with pytest.raises(ValueError, match=r"16x17 pixels \(272\) are more than PIL.Image.MAX_IMAGE_PIXELS \(256\)"):
        ImagePreprocessor(size=(4, 4)).fit_transform(np.zeros((1, 16, 17), dtype=np.uint8))


def test_long_failure_lists_are_capped_with_a_count(tmp_path):
    paths = []
    for i in range(25):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_text("not an image")
    with pytest.raises(ValueError) as error:
        ImagePreprocessor().fit(paths)
    lines = str(error.value).splitlines()
    assert lines[0] == "Could not read 25 of 25 images:"
    assert sum("not an image Pillow can read" in line for line in lines) == 20 and "  ... and 5 more" in lines


# ---------------------------------------------------------- large images
def test_large_images_are_shrunk_before_rotation_and_conversion(tmp_path):
    yy, xx = np.mgrid[0:600, 0:900]
    photo = ((np.stack([np.sin(xx / 60), np.cos(yy / 50), np.sin((xx + yy) / 80)], -1) * 0.5 + 0.5) * 255).astype(
        np.uint8
    )
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "large.png"
    Image.fromarray(photo).save(path, exif=exif)
    for crop in (None, "center"):
        out = ImagePreprocessor(size=(40, 30), crop=crop, flatten=False).fit_transform([path])[0]
        upright = Image.fromarray(np.ascontiguousarray(np.rot90(photo, k=-1)))  # orientation 6, shown upright
        if crop:
            side = min(upright.size)
            left, top = (upright.width - side) // 2, (upright.height - side) // 2
            upright = upright.crop((left, top, left + side, top + side))
        direct = np.asarray(upright.resize((30, 40), Image.Resampling.BILINEAR), dtype=np.float32) / 255
        assert np.abs(out - direct).mean() < 0.02


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the process's memory from /proc (Linux)")
def test_memory_follows_the_output_size_not_the_file(tmp_path):
    """A 6000x6000 PNG (34 MiB decoded) resized to 32x32 costs one decoded copy, not three."""
    path = tmp_path / "huge.png"
    Image.new("L", (6000, 6000), 128).save(path)
    code = textwrap.dedent(
        f"""
        import numpy as np
        from sklearn_imgretrieval import ImagePreprocessor

        def kib(field):  # VmHWM, the peak, is the new process's own (ru_maxrss keeps the parent's)
            line = next(line for line in open("/proc/self/status") if line.startswith(field + ":"))
            return int(line.split()[1])

        ImagePreprocessor(size=(8, 8)).fit_transform(np.zeros((1, 16, 16), np.uint8))  # imports, allocator
        before = kib("VmRSS")
        out = ImagePreprocessor(size=(32, 32)).fit_transform([{str(path)!r}])
        assert out.shape == (1, 1024)
        print((kib("VmHWM") - before) / 1024)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1.5 * 6000 * 6000 / 2**20


def test_ctrl_c_drops_the_queued_decodes():
    from sklearn_imgretrieval import _image_io

    calls = []

    def decode(item):
        calls.append(item)
        if item == 0:
            raise KeyboardInterrupt
        time.sleep(0.01)

    with pytest.raises(KeyboardInterrupt):
        _image_io.map_threads(decode, list(range(500)), n_jobs=2)
    assert len(calls) < 100


def test_set_output_pandas_needs_flat_rows():
    images = np.random.default_rng(0).random((3, 4, 4), dtype=np.float32)
    frame = ImagePreprocessor().set_output(transform="pandas").fit_transform(images)
    assert frame.shape == (3, 16) and list(frame.columns[:2]) == ["pixel_0_0_gray", "pixel_0_1_gray"]
    with pytest.raises(ValueError, match="flatten=False gives 4-D images, which a pandas DataFrame cannot hold"):
        ImagePreprocessor(flatten=False).set_output(transform="pandas").fit_transform(images)
