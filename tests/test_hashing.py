"""ImageHasher: imagehash's bits, packed codes for the Hamming retriever, inputs and errors."""

import numpy as np
import PIL
import pytest
from PIL import Image, ImageEnhance
from skimage import data
from sklearn.datasets import load_sample_images

from sklearn_imgretrieval import ImageHasher, NearestImageRetriever, _image_io
from sklearn_imgretrieval import hashing as hashing_module

# scikit-image's bundled photos: colour and gray, portraits, textures, text, landscapes
_SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "hubble_deep_field",
            "coins", "moon", "page", "text", "clock", "brick", "grass", "gravel", "colorwheel")  # fmt: skip


@pytest.fixture(scope="module")
def photos():
    """A varied set of 108 RGB photos of 40 to 256 pixels a side: 18 bundled photos, each
    shrunk, cropped at 3 places, brightened and darkened (seeded)."""
    rng = np.random.default_rng(0)
    sources = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in _SKIMAGE]
    sources += [Image.fromarray(image) for image in load_sample_images().images]
    out = []
    for photo in sources:
        photo.thumbnail((256, 256))
        out.append(photo)
        for _ in range(3):
            side = rng.uniform(0.3, 0.9)
            w, h = int(photo.width * side), int(photo.height * side)
            left, top = rng.integers(0, photo.width - w + 1), rng.integers(0, photo.height - h + 1)
            out.append(photo.crop((left, top, left + w, top + h)))
        out.append(ImageEnhance.Brightness(photo).enhance(rng.uniform(1.1, 1.5)))
        out.append(ImageEnhance.Brightness(photo).enhance(rng.uniform(0.5, 0.9)))
    return out


@pytest.fixture(scope="module")
def photo_files(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, photo in enumerate(photos):
        paths.append(str(folder / f"photo{i:03d}.jpg"))
        photo.save(paths[-1], quality=90)
    return paths


IMAGEHASH_FUNCTIONS = {"phash": "phash", "dhash": "dhash", "ahash": "average_hash", "whash": "whash"}


def _imagehash_hex(images, method):
    imagehash = pytest.importorskip(
        "imagehash", reason="imagehash is not installed: the bit-for-bit comparison needs it (test extra)"
    )
    function = getattr(imagehash, IMAGEHASH_FUNCTIONS[method])
    hexes = []
    for image in images:
        if isinstance(image, str):
            with Image.open(image) as img:
                hexes.append(str(function(img)))
        else:
            hexes.append(str(function(image)))
    return hexes


def _hex(codes):
    return [row.tobytes().hex() for row in codes]


@pytest.mark.parametrize("method", ["phash", "dhash", "ahash", "whash"])
def test_codes_are_imagehash_bits_in_its_order(photos, photo_files, method):
    """Same bits, same order: a code's hexadecimal digits are str(imagehash.<method>(image)).

    From PIL images, uint8 arrays, and JPEG files decoded at full size: on
    at least 99% of the photos (every one, when this was written)."""
    expected = _imagehash_hex(photos, method)
    arrays = [np.asarray(photo) for photo in photos]
    for images in (photos, arrays):
        codes = ImageHasher(method=method).fit_transform(images)
        assert np.mean(np.array(_hex(codes)) == np.array(expected)) >= 0.99
    # imagehash opens the files itself: decoding them at full size gives its bits
    from_files = _hex(ImageHasher(method=method, jpeg_draft=False).fit_transform(photo_files))
    assert np.mean(np.array(from_files) == np.array(_imagehash_hex(photo_files, method))) >= 0.99


@pytest.mark.parametrize("method", ["phash", "dhash", "ahash"])
def test_jpeg_draft_decoding_keeps_almost_every_bit(photo_files, method):
    """JPEG draft decoding shrinks in libjpeg rather than with Lanczos: a few bits change."""
    expected = _imagehash_hex(photo_files, method)
    codes = ImageHasher(method=method).fit_transform(photo_files)
    reference = np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in expected])
    agreement = 1 - np.unpackbits(codes ^ reference, axis=1).mean()
    assert 0.96 <= agreement < 1.0  # measured 0.970-0.984; 1 would mean no draft decoding


@pytest.mark.parametrize("hash_size", [4, 8, 16])
def test_packed_rows_index_with_hamming_retriever(photos, hash_size):
    images = photos[::6]  # the 18 originals
    codes = ImageHasher(hash_size=hash_size).fit_transform(images)
    assert codes.dtype == np.uint8 and codes.shape == (len(images), hash_size**2 // 8)
    copies = [ImageEnhance.Brightness(im).enhance(1.2).resize((im.width // 2, im.height // 2)) for im in images]
    retriever = NearestImageRetriever(n_neighbors=1, metric="hamming").fit(codes)
    distances, indices = retriever.kneighbors(ImageHasher(hash_size=hash_size).transform(copies))
    assert (indices.ravel() == np.arange(len(images))).mean() >= 0.9
    assert np.median(distances) <= 0.1 * hash_size**2  # bits, out of hash_size**2


def test_float_arrays_hash_at_any_scale(photos):
    """Float (and other non-uint8) images are hashed without rounding, at any scale."""
    gray = np.stack([np.asarray(photo.convert("L").resize((48, 40)), dtype=np.float64) / 255 for photo in photos[:12]])
    for method in ("phash", "dhash", "ahash", "whash"):
        hasher = ImageHasher(method=method)
        codes = hasher.fit_transform(gray)
        rescaled = hasher.transform(gray * 255)
        assert np.unpackbits(rescaled ^ codes).mean() <= 0.01  # the same up to floating-point rounding
        # the same images as 2-D rows, with their shape given
        rows = ImageHasher(method=method, image_shape=(40, 48)).fit_transform(gray.reshape(len(gray), -1))
        np.testing.assert_array_equal(rows, codes)


def test_mirrored_codes_are_codes_of_mirrored_images(photos):
    images = [np.asarray(photo) for photo in photos[:24]]
    for method in ("phash", "dhash", "ahash", "whash"):
        hasher = ImageHasher(method=method)
        codes, mirrored = hasher._hash(images, mirrored=True)
        np.testing.assert_array_equal(codes, hasher.transform(images))
        np.testing.assert_array_equal(mirrored, hasher.transform([image[:, ::-1] for image in images]))


def test_chunks_give_the_same_codes(photo_files, monkeypatch):
    codes = ImageHasher(n_jobs=2).fit_transform(photo_files[:20])
    monkeypatch.setattr(hashing_module, "_CHUNK", 3)
    np.testing.assert_array_equal(ImageHasher().fit_transform(photo_files[:20]), codes)


def test_a_hash_size_past_64_is_refused_before_any_image_is_shrunk():
    images = np.zeros((2, 16, 16), dtype=np.uint8)
    # hash_size=4096 once grew past 4 GB on two 16x16 images.
    with pytest.raises(ValueError, match=r"hash_size=4096 is more than 64.*16384x16384 float64 pixels \(2,048 MiB"):
        ImageHasher(hash_size=4096).fit_transform(images)
    with pytest.raises(ValueError, match="hash_size=128 is more than 64"):
        ImageHasher(hash_size=128).transform(images)
    assert ImageHasher(hash_size=64).fit_transform(images).shape == (2, 512)


def test_chunks_shrink_as_the_hash_size_grows(photos, monkeypatch):
    # 32 MiB of float64 pixels at a time: 4096 images at the default size, 64 of 256x256 (hash_size=64)
    assert hashing_module._images_per_chunk("phash", 8) == 4096
    assert hashing_module._images_per_chunk("phash", 64) == 64
    assert hashing_module._images_per_chunk("dhash", 64) == 1008  # 64x65 images
    images = [np.asarray(photo) for photo in photos[:10]]
    codes = ImageHasher(hash_size=32).fit_transform(images)
    monkeypatch.setattr(hashing_module, "_CHUNK_BYTES", 3 * 8 * 128 * 128)  # three pHash images of 128x128
    assert hashing_module._images_per_chunk("phash", 32) == 3
    np.testing.assert_array_equal(ImageHasher(hash_size=32).fit_transform(images), codes)


def test_exif_orientation_and_16_bit_files(photos, tmp_path):
    photo = photos[0]
    upright = ImageHasher(jpeg_draft=False).fit_transform([photo])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: displayed turned 90 degrees clockwise
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    gray16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as img:
        assert img.mode.startswith("I")  # a wide mode that Pillow's conversion to L would clip
    codes = ImageHasher(jpeg_draft=False).fit_transform([str(tmp_path / "sideways.jpg"), str(tmp_path / "gray16.png")])
    bits_apart = np.unpackbits(codes ^ upright, axis=1).sum(axis=1)
    assert bits_apart.max() <= 4, bits_apart
    turned = ImageHasher().fit_transform([photo.transpose(Image.Transpose.ROTATE_90)])
    assert np.unpackbits(turned ^ upright).sum() > 16  # orientation matters, so it was applied


@pytest.fixture(scope="module")
def jpeg_kinds(photos, tmp_path_factory):
    """JPEG files of every kind the in-memory reader decodes itself: sizes that
    Pillow's draft shrinks by 8, 4, 2 and 1, grayscale, progressive, 4:4:4,
    every EXIF orientation."""
    folder = tmp_path_factory.mktemp("jpeg_kinds")
    photo = photos[0]
    files = []

    def save(image, name, **options):
        files.append(str(folder / f"{name}.jpg"))
        image.save(files[-1], quality=90, **options)

    for side in (256, 200, 100, 40, 31):
        save(photo.resize((side, side * 3 // 4 + 1)), f"side{side}")
    save(photo.convert("L"), "gray")
    save(photo, "progressive", progressive=True)
    save(photo, "444", subsampling=0)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(photo.crop((0, 0, 180, 120)), f"orientation{orientation}", exif=exif)
    return files


def test_in_memory_jpeg_reader_gives_pillows_pixels(jpeg_kinds, monkeypatch):
    """The simplejpeg reader decodes what Pillow's draft decodes, pixel for pixel, upright."""
    for size in ((32, 32), (8, 8), (100, 100)):
        for path in jpeg_kinds:
            pixels = _image_io.read_jpeg_gray(path, size)
            assert pixels is not None, path
            with Image.open(path) as img:
                _image_io.request_draft(img, 1, size, None)
                expected = np.asarray(hashing_module._gray_pil(img))
            np.testing.assert_array_equal(pixels, expected, err_msg=f"{path} at {size}")
    for method in ("phash", "dhash", "whash"):  # and so the same codes
        codes = ImageHasher(method=method).transform(jpeg_kinds)
        with monkeypatch.context() as patch:
            patch.setattr(_image_io, "read_jpeg_gray", lambda path, size: None)
            np.testing.assert_array_equal(ImageHasher(method=method).transform(jpeg_kinds), codes)


def test_lanczos_resize_gives_pillows_pixels():
    """The matrix resize of the JPEG reader's pixels is Pillow's LANCZOS, pixel for pixel,
    at every size (tall images, which Pillow resizes columns first, go through Pillow)."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        rows, columns, height, width = (
            rng.integers(1, 80),
            rng.integers(1, 80),
            rng.integers(1, 40),
            rng.integers(1, 40),
        )
        pixels = rng.integers(0, 256, (rows, columns), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(hashing_module._lanczos_resize(pixels, height, width), expected)
    # the grids of the hashes go through the matrix products, not through Pillow
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashing_module, "_resized", lambda *args: pytest.fail("resized by Pillow"))
        for height, width in ((8, 9), (8, 8), (16, 17)):
            hashing_module._lanczos_resize(np.zeros((32, 43), dtype=np.uint8), height, width)


def test_in_memory_jpeg_reader_leaves_other_files_to_pillow(photos, tmp_path):
    photo = photos[0]
    photo.save(tmp_path / "photo.png")
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    photo.save(tmp_path / "whole.jpg")
    # the XMP segment written by hand: Pillow < 11 ignores save(xmp=...)
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><tiff:Orientation>6</tiff:Orientation></x:xmpmeta>"
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "xmp.jpg").write_bytes(whole[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + whole[2:])
    exif = Image.Exif()
    exif[0x0112] = 1
    photo.save(tmp_path / "exif.jpg", exif=exif)
    data = (tmp_path / "exif.jpg").read_bytes()
    app1 = data.index(b"\xff\xe1")
    segment = data[app1 : app1 + 2 + int.from_bytes(data[app1 + 2 : app1 + 4], "big")]
    (tmp_path / "split_exif.jpg").write_bytes(data[:app1] + segment + data[app1:])  # EXIF in two segments
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:2000])
    assert _image_io.read_jpeg_gray(str(tmp_path / "exif.jpg"), (32, 32)) is not None
    for name in ("photo.png", "cmyk.jpg", "xmp.jpg", "truncated.jpg", "split_exif.jpg"):
        assert _image_io.read_jpeg_gray(str(tmp_path / name), (32, 32)) is None, name
    # Pillow reads them instead: the XMP orientation is applied (Pillow reads it in a JPEG
    # from 11.2 on; older releases ignore it), the truncated file is refused
    assert ImageHasher().transform([str(tmp_path / "photo.png"), str(tmp_path / "cmyk.jpg")]).shape == (2, 8)
    pillow_reads_xmp = tuple(int(part) for part in PIL.__version__.split(".")[:2]) >= (11, 2)
    with Image.open(tmp_path / "xmp.jpg") as img:
        assert img.getexif().get(0x0112) == (6 if pillow_reads_xmp else None)
    turned = ImageHasher().transform([photo.transpose(Image.Transpose.ROTATE_270) if pillow_reads_xmp else photo])
    np.testing.assert_array_equal(ImageHasher().transform([str(tmp_path / "xmp.jpg")]), turned)
    with pytest.raises(ValueError, match="truncated"):
        ImageHasher().transform([str(tmp_path / "truncated.jpg")])


def test_transform_needs_no_fit_and_outputs_pandas(photos):
    pytest.importorskip("pandas", reason="pandas is not installed: set_output(transform='pandas') needs it")
    hasher = ImageHasher(hash_size=4)
    codes = hasher.transform(photos[:3])  # stateless: no fit needed
    frame = hasher.set_output(transform="pandas").fit_transform(photos[:3])
    assert list(frame.columns) == ["imagehasher0", "imagehasher1"]
    np.testing.assert_array_equal(frame.to_numpy(), codes)


def test_errors_name_the_problem(photos, tmp_path):
    with pytest.raises(ValueError, match=r"hash_size=12 is not a power of two\. Use 8 \(64 bits\) or 16"):
        ImageHasher(hash_size=12).fit(photos[:2])
    with pytest.raises(ValueError, match="hash_size"):
        ImageHasher(hash_size=2).transform(photos[:2])
    with pytest.raises(ValueError, match="method"):
        ImageHasher(method="md5").fit(photos[:2])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    good = tmp_path / "good.jpg"
    photos[0].save(good)
    with pytest.raises(ValueError, match=r"Could not hash 1 of 2 images:\n  .*broken\.jpg: not an image"):
        ImageHasher().transform([str(good), str(broken)])
    with pytest.raises(TypeError, match="Wrap it in a list"):
        ImageHasher().transform(str(good))
