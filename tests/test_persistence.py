"""save / load: the safe model format, what it refuses, and Keras's own format."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import zipfile

import joblib
import keras
import numpy as np
import pytest
import skops.io
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA

from sklearn_imgretrieval import (
    AutoencoderEmbedder,
    ImagePreprocessor,
    NearestImageRetriever,
    PretrainedCNNEmbedder,
    VAEEmbedder,
    load,
    make_retrieval_pipeline,
    save,
)
from sklearn_imgretrieval.persistence import FORMAT_VERSION, HEADER

RNG = np.random.default_rng(0)
IMAGES = RNG.random((24, 8, 8, 1), dtype=np.float32)
LABELS = np.arange(24) % 3
QUERIES = RNG.random((5, 8, 8, 1), dtype=np.float32)
LITE0 = dict(weights=None, input_size=32, batch_size=8, random_state=0)
KERAS_TRAINING = dict(epochs=1, batch_size=8, random_state=0)


def _answers(estimator, X):
    """What a fitted object computes: the output to compare bit for bit."""
    if hasattr(estimator, "kneighbors"):
        return np.concatenate([part.astype(np.float64) for part in estimator.kneighbors(X)], axis=1)
    return estimator.transform(X)


@pytest.fixture(scope="module")
def fitted():
    """name -> (fitted object, queries) for every estimator and pipeline kind of the library."""
    embeddings = RNG.random((24, 4))
    return {
        "preprocessor": (ImagePreprocessor(size=(6, 6)).fit(IMAGES), QUERIES),
        "conv_autoencoder": (
            AutoencoderEmbedder(4, architecture="conv", filters=(4,), hidden_units=(), **KERAS_TRAINING).fit(IMAGES),
            QUERIES,
        ),
        "vae": (VAEEmbedder(2, filters=(4,), hidden_units=(8,), **KERAS_TRAINING).fit(IMAGES), QUERIES),
        # one Lite0 (slow to build) with every custom layer: ImageNet pixels, GeM pooling, a fine-tuned head
        "lite0_fine_tuned": (
            PretrainedCNNEmbedder(
                pooling="gem", fine_tune=True, hidden_units=(8,), latent_dim=4, epochs=1, **LITE0
            ).fit(IMAGES, LABELS),
            QUERIES,
        ),
        "retriever": (NearestImageRetriever(n_neighbors=3, algorithm="brute").fit(embeddings, LABELS), embeddings[:4]),
        "pca_pipeline": (
            make_retrieval_pipeline(
                ImagePreprocessor(size=(6, 6)),
                PCA(5, random_state=0),
                NearestImageRetriever(n_neighbors=3, metric="cosine"),
            ).fit(IMAGES, LABELS),
            QUERIES,
        ),
        "autoencoder_pipeline": (
            make_retrieval_pipeline(
                ImagePreprocessor(),
                AutoencoderEmbedder(3, hidden_units=(8,), **KERAS_TRAINING),
                NearestImageRetriever(n_neighbors=2, algorithm="brute"),
            ).fit(IMAGES),
            QUERIES,
        ),
    }


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    for name, (estimator, _) in fitted.items():
        save(estimator, folder / f"{name}.skops")
    return folder


@pytest.mark.network  # the fixtures train Keras networks
# ------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    "name",
    [
        "preprocessor",
        "conv_autoencoder",
        "vae",
        "lite0_fine_tuned",
        "retriever",
        "pca_pipeline",
        "autoencoder_pipeline",
    ],
)
def test_every_kind_of_estimator_round_trips_bit_identically(fitted, saved, name):
    estimator, X = fitted[name]
    loaded = load(saved / f"{name}.skops")
    assert type(loaded) is type(estimator) and loaded is not estimator
    assert repr(loaded.get_params()) == repr(estimator.get_params())
    np.testing.assert_array_equal(_answers(loaded, X), _answers(estimator, X))


@pytest.mark.network  # the fixtures train Keras networks
def test_round_trip_in_a_fresh_process(fitted, saved, tmp_path):
    # Lite0 is left to test_cli's lite0 index, queried in another process: building it twice more is slow.
    names = [name for name in fitted if not name.startswith("lite0")]
    for name in names:
        estimator, X = fitted[name]
        np.save(tmp_path / f"{name}.queries.npy", X)
        np.save(tmp_path / f"{name}.expected.npy", _answers(estimator, X))
    code = textwrap.dedent(
        f"""
        import pathlib, sys
        import numpy as np
        from sklearn_imgretrieval import load
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from test_persistence import _answers
        out = pathlib.Path({str(tmp_path)!r})
        for name in {names!r}:
            X = np.load(out / f"{{name}}.queries.npy")
            np.save(out / f"{{name}}.loaded.npy", _answers(load(pathlib.Path({str(saved)!r}) / f"{{name}}.skops"), X))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in names:
        np.testing.assert_array_equal(
            np.load(tmp_path / f"{name}.loaded.npy"), np.load(tmp_path / f"{name}.expected.npy"), err_msg=name
        )


@pytest.mark.parametrize("algorithm", ["auto", "brute", "kd_tree", "ball_tree", "flat", "ivf", "hnsw", "ivfpq"])
def test_every_search_backend_round_trips(tmp_path, algorithm):
    """Each index keeps plain data (arrays, FAISS's serialized bytes): no type beyond the library's to trust."""
    gallery = RNG.random((300, 8)).astype(np.float32)
    retriever = NearestImageRetriever(n_neighbors=4, algorithm=algorithm).fit(gallery)
    save(retriever, tmp_path / "index.skops")
    loaded = load(tmp_path / "index.skops")
    np.testing.assert_array_equal(_answers(loaded, gallery[:5]), _answers(retriever, gallery[:5]))


def test_a_binary_index_round_trips(tmp_path):
    codes = RNG.integers(0, 256, (50, 4), dtype=np.uint8)  # packed bits: FAISS's hamming index
    retriever = NearestImageRetriever(n_neighbors=2, metric="hamming").fit(codes)
    save(retriever, tmp_path / "binary.skops")
    np.testing.assert_array_equal(_answers(load(tmp_path / "binary.skops"), codes[:5]), _answers(retriever, codes[:5]))


@pytest.mark.network  # the fixtures train Keras networks
def test_the_file_records_the_format_and_replaces_atomically(fitted, saved, tmp_path):
    with zipfile.ZipFile(saved / "retriever.skops") as archive:
        header = json.loads(archive.read(HEADER))
    assert header["format"] == "sklearn-imgretrieval" and header["format_version"] == FORMAT_VERSION
    assert header["type"] == "sklearn_imgretrieval.neighbors._retriever.NearestImageRetriever"
    # a save that fails leaves the previous file as it was
    target = tmp_path / "model.skops"
    save(fitted["retriever"][0], target)
    before = target.read_bytes()
    with pytest.raises(TypeError):
        save(NearestImageRetriever(metric=lambda a, b: 0.0).fit(RNG.random((3, 2))), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.skops"]


# -------------------------------------------------------- what save refuses
def _manhattan(a, b):
    return float(np.abs(a - b).sum())


@pytest.mark.parametrize(
    "estimator, parameter",
    [
        (NearestImageRetriever(metric=_manhattan), "NearestImageRetriever.metric"),
        (PretrainedCNNEmbedder(backbone=lambda shape: None, weights=None), "PretrainedCNNEmbedder.backbone"),
    ],
)
def test_parameters_holding_code_cannot_be_saved(estimator, parameter, tmp_path):
    pipe = make_retrieval_pipeline(ImagePreprocessor(), estimator, NearestImageRetriever())
    with pytest.raises(TypeError, match=rf"{parameter}=.* holds code, not data.*joblib.dump"):
        save(pipe, tmp_path / "pipe.skops")
    assert not list(tmp_path.iterdir())


@pytest.mark.network  # the fixtures train Keras networks
def test_a_keras_model_backbone_cannot_be_saved(tmp_path):
    inputs = keras.Input((32, 32, 3))
    backbone = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    embedder = PretrainedCNNEmbedder(backbone=backbone, input_size=32).fit(IMAGES[:2])
    with pytest.raises(TypeError, match="PretrainedCNNEmbedder.backbone=.*holds code"):
        save(embedder, tmp_path / "embedder.skops")


# -------------------------------------------------------- what load refuses
class _Payload:
    """Unpickling it creates ``marker``: what a hostile pickle would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("compress", [0, 3])
def test_a_pickle_is_refused_without_being_run(tmp_path, compress):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.joblib"
    joblib.dump({"pipeline": _Payload(marker)}, evil, compress=compress)
    with pytest.raises(ValueError, match=r"is a (compressed )?(joblib \()?pickle.*can run any code.*convert it"):
        load(evil)
    assert not marker.exists()
    joblib.load(evil)  # the payload is live: unpickling runs it
    assert marker.exists()


class Doubler(TransformerMixin, BaseEstimator):
    """A user's own step: a type skops does not know."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return 2 * np.asarray(X)


def test_types_of_other_packages_need_trusted(tmp_path):
    path = tmp_path / "custom.skops"
    pipe = make_retrieval_pipeline(Doubler(), NearestImageRetriever(n_neighbors=1)).fit(np.eye(3))
    save(pipe, path)
    with pytest.raises(
        ValueError, match=r"not trusted: test_persistence.Doubler.*trusted=\['test_persistence.Doubler'\]"
    ):
        load(path)
    assert load(path, trusted=["test_persistence.Doubler"]).kneighbors([[1.0, 0, 0]])[1].tolist() == [[0]]
    assert load(path, trusted=[Doubler]).kneighbors([[0, 1.0, 0]])[1].tolist() == [[1]]
    with pytest.raises(TypeError, match="trusted must be a list of type names"):
        load(path, trusted=True)


def _rewrite(source, target, edit_schema):
    """Copy a saved file with its schema.json changed by ``edit_schema`` (a dict -> None function)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "schema.json":
                schema = json.loads(data)
                edit_schema(schema)
                data = json.dumps(schema).encode()
            new.writestr(info.filename, data)


@pytest.mark.network  # the fixtures train Keras networks
@pytest.mark.parametrize(
    "module, name, refused",
    [
        # __main__ of this package runs the command line: never imported to check a name
        ("sklearn_imgretrieval.__main__", "ImagePreprocessor", "sklearn_imgretrieval.__main__.ImagePreprocessor"),
        # a class of ours built on Keras's Layer, whose state is not plain data
        ("sklearn_imgretrieval.embedders._layers", "ImageNetPixels", "ImageNetPixels"),
        # re-exported names are not where the class is defined
        ("sklearn_imgretrieval", "ImagePreprocessor", "sklearn_imgretrieval.ImagePreprocessor"),
        ("os", "system", "os.system"),
    ],
)
def test_crafted_files_naming_other_types_are_refused(fitted, saved, tmp_path, module, name, refused):
    def retarget(schema):
        schema["__module__"], schema["__class__"] = module, name

    crafted = tmp_path / "crafted.skops"
    _rewrite(saved / "preprocessor.skops", crafted, retarget)
    main_imported = "sklearn_imgretrieval.__main__" in sys.modules
    with pytest.raises(ValueError, match=rf"not trusted: .*{refused}"):
        load(crafted)
    assert ("sklearn_imgretrieval.__main__" in sys.modules) == main_imported


def _truncated(data):
    return data[: len(data) // 2]


def _flipped(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.network  # the fixtures train Keras networks
@pytest.mark.parametrize("damage", [_truncated, _flipped, lambda data: b"", lambda data: os.urandom(300)])
def test_damaged_files_give_a_clear_error(saved, tmp_path, damage):
    path = tmp_path / "damaged.skops"
    path.write_bytes(damage((saved / "pca_pipeline.skops").read_bytes()))
    with pytest.raises(ValueError, match=rf"{path}.*(could not be read|not a zip archive|was not written by)"):
        load(path)


def _with_header(source, target, header):
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename != HEADER:
                new.writestr(info.filename, old.read(info))
        if header is not None:
            new.writestr(HEADER, header if isinstance(header, bytes) else json.dumps(header))


@pytest.mark.network  # the fixtures train Keras networks
def test_headers_that_are_missing_garbled_or_newer(saved, tmp_path):
    source, path = saved / "preprocessor.skops", tmp_path / "edited.skops"
    header = json.loads(zipfile.ZipFile(source).read(HEADER))
    cases = [
        (None, "has no sklearn_imgretrieval.json .*skops.io.dump"),
        (b"\xff{not json", "could not be read"),
        ({"format": "something else"}, "was not written by sklearn_imgretrieval.save"),
        ({**header, "format_version": "1"}, "could not be read.*format_version"),
        ({**header, "format_version": FORMAT_VERSION + 1, "library_version": "9.0"}, "written by .* 9.0.*Upgrade"),
        (
            {**header, "type": "sklearn.decomposition._pca.PCA"},
            "the header says .*PCA, the file holds ImagePreprocessor",
        ),
    ]
    for content, message in cases:
        _with_header(source, path, content)
        with pytest.raises(ValueError, match=message):
            load(path)
    # a plain skops file (no header of ours) is named as such
    skops.io.dump(ImagePreprocessor(), path)
    with pytest.raises(ValueError, match="skops.io.dump"):
        load(path)
    with pytest.raises(FileNotFoundError, match="No file at"):
        load(tmp_path / "missing.skops")


@pytest.mark.network  # the fixtures train Keras networks
def test_tampered_object_state_is_reported_not_raised_raw(fitted, saved, tmp_path):
    def break_shape(schema):  # n_features_in_ no longer fits the stored inference graph
        schema["content"]["content"]["n_features_in_"]["content"] = "65"

    path = tmp_path / "tampered.skops"
    _rewrite(saved / "conv_autoencoder.skops", path, break_shape)
    with pytest.raises(ValueError, match="could not be read: it is damaged.*does not fit this estimator"):
        load(path)

    # The networks are built from their weights when first used (not at load, so that
    # ONNX Runtime inference needs no Keras): weights that do not fit are reported then.
    def break_weights(schema):
        schema["content"]["content"]["_keras_weights"]["content"]["encoder_"]["content"].pop()

    _rewrite(saved / "conv_autoencoder.skops", path, break_weights)
    loaded = load(path)
    with pytest.raises(ValueError, match="stored weights of AutoencoderEmbedder.encoder_ do not fit its network"):
        loaded.inverse_transform(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="stored weights of AutoencoderEmbedder.encoder_ do not fit"):
        loaded.set_params(inference="keras").transform(QUERIES)  # stays as loaded after the first refusal
    estimator, queries = fitted["conv_autoencoder"]
    np.testing.assert_array_equal(loaded.set_params(inference="auto").transform(queries), estimator.transform(queries))


@pytest.mark.network  # the fixtures train Keras networks
# ------------------------------------------------------ Keras's own format
def test_keras_networks_load_back_in_safe_mode(fitted, tmp_path):
    from sklearn_imgretrieval.embedders._layers import GaussianSampling, GeneralizedMeanPooling2D, ImageNetPixels

    images = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(3, 3)(ImageNetPixels("caffe")(images))
    rows = keras.Input((4,))
    networks = {
        "encoder": fitted["conv_autoencoder"][0].encoder_,
        "vae_decoder": fitted["vae"][0].decoder_,
        "head": fitted["lite0_fine_tuned"][0].head_,
        # every custom layer, in a network small enough to save and rebuild quickly
        "custom_layers": keras.Model(images, GeneralizedMeanPooling2D()(features)),
        "sampling": keras.Model(rows, GaussianSampling(0.5, seed=0)([rows, rows])),
    }
    for name, network in networks.items():
        path = tmp_path / f"{name}.keras"
        network.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        x = np.random.default_rng(1).random((2, *network.input_shape[1:]), dtype=np.float32)
        np.testing.assert_array_equal(
            np.asarray(loaded.predict_on_batch(x)), np.asarray(network.predict_on_batch(x)), err_msg=name
        )
