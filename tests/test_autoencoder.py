"""AutoencoderEmbedder, and through it what every Keras embedder shares (_base.py)."""

import copy
import pickle
import random
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from sklearn_imgretrieval import (
    AutoencoderEmbedder,
    ImagePreprocessor,
    NearestImageRetriever,
    VAEEmbedder,
    make_retrieval_pipeline,
)
from sklearn_imgretrieval.datasets import load_digits_images

pytestmark = pytest.mark.network  # every test trains a Keras network

TINY = dict(latent_dim=4, hidden_units=(16,), filters=(4, 8), epochs=2, batch_size=32, random_state=0)


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    return images[:240, :, :, None], labels[:240]


@pytest.fixture(scope="module")
def fitted(digits):
    images, _ = digits
    return AutoencoderEmbedder(architecture="conv", **TINY).fit(images)


@pytest.mark.parametrize("architecture", ["dense", "conv"])
def test_transform_shape_dtype_and_inverse_layout(digits, architecture):
    images, _ = digits
    rows = images.reshape(len(images), -1)
    embedder = AutoencoderEmbedder(architecture=architecture, **TINY).fit(rows)
    embeddings = embedder.transform(rows)
    assert embeddings.shape == (240, 4) and embeddings.dtype == np.float32
    assert embedder.image_shape_ == (8, 8, 1)
    assert embedder.inverse_transform(embeddings).shape == (240, 64)
    assert embedder.n_iter_ == len(embedder.history_["loss"]) == 2
    assert set(embedder.history_) == {"loss", "val_loss"}


def test_four_d_input_gives_four_d_reconstructions(fitted, digits):
    images, _ = digits
    assert fitted.image_shape_ == (8, 8, 1)
    assert fitted.inverse_transform(fitted.transform(images[:3])).shape == (3, 8, 8, 1)
    # 4-D and rows of the same images give the same embedding
    np.testing.assert_array_equal(fitted.transform(images[:5]), fitted.transform(images[:5].reshape(5, -1)))


def test_odd_sized_rgb_images_round_trip():
    images = np.random.default_rng(0).random((20, 7, 5, 3), dtype=np.float32)
    embedder = AutoencoderEmbedder(architecture="conv", **TINY).fit(images)
    assert embedder.inverse_transform(embedder.transform(images)).shape == (20, 7, 5, 3)


def test_training_improves_the_score(digits):
    images, _ = digits
    short = AutoencoderEmbedder(**{**TINY, "epochs": 1}).fit(images)
    longer = AutoencoderEmbedder(**{**TINY, "epochs": 15, "patience": 15}).fit(images)
    assert longer.score(images) > short.score(images)
    assert longer.score(images) == pytest.approx(
        -np.mean((longer.inverse_transform(longer.transform(images)) - images) ** 2), rel=1e-4
    )


def test_binary_crossentropy_score_matches_the_loss(digits):
    images, _ = digits
    embedder = AutoencoderEmbedder(loss="binary_crossentropy", **TINY).fit(images)
    p = np.clip(embedder.inverse_transform(embedder.transform(images)), 1e-7, 1 - 1e-7)
    expected = np.mean(images * np.log(p) + (1 - images) * np.log(1 - p))
    assert embedder.score(images) == pytest.approx(expected, rel=1e-4)


def test_same_seed_same_embeddings_and_no_global_random_state_touched(digits):
    images, _ = digits
    random.seed(123)
    np.random.seed(123)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    first = AutoencoderEmbedder(architecture="conv", **TINY).fit(images).transform(images)
    second = AutoencoderEmbedder(architecture="conv", **TINY).fit(images).transform(images)
    np.testing.assert_array_equal(first, second)
    assert random.getstate() == python_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))
    other_seed = AutoencoderEmbedder(architecture="conv", **{**TINY, "random_state": 1}).fit(images)
    assert not np.array_equal(first, other_seed.transform(images))


def test_denoising_trains_on_noisy_inputs_and_embeds_clean_ones(digits):
    images, _ = digits
    plain = AutoencoderEmbedder(**TINY).fit(images)
    noisy = AutoencoderEmbedder(noise=0.3, **TINY).fit(images)
    # same seeds for weights and batches: only the noise differs, and it changes the training
    assert not np.allclose(noisy.transform(images), plain.transform(images))
    assert noisy.history_["loss"][0] > plain.history_["loss"][0]  # noisy inputs are harder to reconstruct
    again = AutoencoderEmbedder(noise=0.3, **TINY).fit(images)
    np.testing.assert_array_equal(again.transform(images), noisy.transform(images))  # seeded noise
    np.testing.assert_array_equal(noisy.transform(images[:5]), noisy.transform(images[:5]))  # no noise at transform


def test_warm_start_continues_training(digits):
    images, _ = digits
    embedder = AutoencoderEmbedder(warm_start=True, **TINY).fit(images)
    encoder = embedder.encoder_
    first_losses = list(embedder.history_["loss"])
    embedder.fit(images)
    assert embedder.encoder_ is encoder
    assert embedder.n_iter_ == 4 and embedder.history_["loss"][:2] == first_losses
    assert embedder.history_["loss"][2] < first_losses[0]
    with pytest.raises(ValueError, match="features"):
        embedder.fit(np.random.default_rng(0).random((20, 49), dtype=np.float32))


def test_pickle_deepcopy_and_clone(fitted, digits):
    images, _ = digits
    expected = fitted.transform(images)
    for copied in (pickle.loads(pickle.dumps(fitted)), copy.deepcopy(fitted)):
        np.testing.assert_array_equal(copied.transform(images), expected)
        np.testing.assert_array_equal(copied.inverse_transform(expected[:3]), fitted.inverse_transform(expected[:3]))
    unfitted = clone(fitted)
    assert unfitted.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        unfitted.transform(images)
    # the fitted estimator keeps its networks after being pickled
    assert hasattr(fitted, "encoder_")


def test_joblib_round_trip_in_a_fresh_process(digits, tmp_path):
    images, labels = digits
    pipe = make_retrieval_pipeline(
        ImagePreprocessor(size=(8, 8), color_mode="grayscale"),
        AutoencoderEmbedder(architecture="conv", **TINY),
        NearestImageRetriever(n_neighbors=5, metric="cosine"),
    ).fit(images[:200], labels[:200])
    joblib.dump(pipe, tmp_path / "model.joblib")
    np.save(tmp_path / "queries.npy", images[200:])
    script = textwrap.dedent(
        f"""
        import joblib, numpy as np
        pipe = joblib.load({str(tmp_path / "model.joblib")!r})
        queries = np.load({str(tmp_path / "queries.npy")!r})
        np.save({str(tmp_path / "embeddings.npy")!r}, pipe[:-1].transform(queries))
        np.save({str(tmp_path / "indices.npy")!r}, pipe.kneighbors(queries, return_distance=False))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "embeddings.npy"), pipe[:-1].transform(images[200:]))
    np.testing.assert_array_equal(
        np.load(tmp_path / "indices.npy"), pipe.kneighbors(images[200:], return_distance=False)
    )


def test_grid_search_over_the_pipeline_in_parallel(digits):
    images, labels = digits
    pipe = make_retrieval_pipeline(
        ImagePreprocessor(size=(8, 8), color_mode="grayscale"),
        AutoencoderEmbedder(architecture="conv", **TINY),
        NearestImageRetriever(n_neighbors=5, metric="cosine"),
    )
    search = GridSearchCV(pipe, {"autoencoderembedder__latent_dim": [2, 4]}, cv=3, n_jobs=2)
    search.fit(images[:150], labels[:150])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_[1].latent_dim in (2, 4)
    assert search.best_score_ > 0.3  # well above the 0.1 of random neighbours


def test_feature_names_and_pandas_output(fitted, digits):
    images, _ = digits
    rows = images.reshape(len(images), -1)
    names = fitted.get_feature_names_out()
    assert list(names) == [f"autoencoderembedder{i}" for i in range(4)]
    frame = clone(fitted).set_output(transform="pandas").fit(rows).transform(rows[:3])
    assert list(frame.columns) == list(names) and frame.shape == (3, 4)


# ------------------------------------------------------------------- errors
def test_nan_and_inf_are_rejected(digits):
    images, _ = digits
    rows = images.reshape(len(images), -1).copy()
    rows[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        AutoencoderEmbedder(**TINY).fit(rows)
    rows[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        AutoencoderEmbedder(**TINY).fit(rows)


def test_a_batch_size_whose_padded_batch_passes_1_gib_is_refused_before_training():
    rows = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    # Once every prediction batch was padded to 10**8 rows of 64 values (24 GiB) for 4 images.
    message = (
        r"batch_size=100,000,000 makes batches of 100,000,000 rows of 64 float32 values, 23.8 GiB, more than "
        r"the 1 GiB a batch may take .* Use batch_size <= 4,194,304"
    )
    for cls in (AutoencoderEmbedder, VAEEmbedder):
        with pytest.raises(ValueError, match=message):
            cls(**{**TINY, "epochs": 1, "batch_size": 10**8}).fit_transform(rows)
    fitted = AutoencoderEmbedder(**{**TINY, "epochs": 1, "batch_size": 4_194_304}).fit(rows)  # the largest allowed
    with pytest.raises(ValueError, match=message):  # checked again by transform, after set_params
        fitted.set_params(batch_size=10**8).transform(rows)


def test_float_pixels_in_0_255_are_warned_about(digits):
    images, _ = digits
    rows = images.reshape(len(images), -1)
    with pytest.warns(
        UserWarning, match=r"AutoencoderEmbedder was given float pixels from 0 to 255.*divide them by 255"
    ):
        AutoencoderEmbedder(**{**TINY, "epochs": 1}).fit(rows * 255)


def test_too_few_samples_for_the_validation_split():
    with pytest.raises(ValueError, match="set validation_fraction=0"):
        AutoencoderEmbedder(**TINY).fit(np.random.default_rng(0).random((1, 64), dtype=np.float32))
    # without a validation split one image is enough
    AutoencoderEmbedder(validation_fraction=0, **{**TINY, "epochs": 1}).fit(np.ones((1, 64), dtype=np.float32))


def test_latent_dim_larger_than_the_input():
    with pytest.raises(ValueError, match=r"latent_dim=4 is larger than the input's n_features=3"):
        AutoencoderEmbedder(**TINY).fit(np.random.default_rng(0).random((20, 3), dtype=np.float32))


def test_image_shape_must_match_n_features_and_conv_needs_a_shape():
    rows = np.random.default_rng(0).random((20, 60), dtype=np.float32)
    with pytest.raises(ValueError, match=r"image_shape=\(7, 7\) holds 49 values.*60 features"):
        AutoencoderEmbedder(architecture="conv", image_shape=(7, 7), **TINY).fit(rows)
    with pytest.raises(ValueError, match="Set image_shape"):
        AutoencoderEmbedder(architecture="conv", **TINY).fit(rows)
    embedder = AutoencoderEmbedder(architecture="conv", image_shape=(5, 4, 3), **TINY).fit(rows)
    assert embedder.inverse_transform(embedder.transform(rows)).shape == (20, 60)
    # the dense architecture needs no shape
    assert AutoencoderEmbedder(**TINY).fit(rows).image_shape_ is None


def test_transform_before_fit_and_wrong_n_features(fitted):
    with pytest.raises(NotFittedError):
        AutoencoderEmbedder().transform(np.ones((2, 64)))
    with pytest.raises(ValueError, match="X has 49 features, but AutoencoderEmbedder is expecting 64"):
        fitted.transform(np.ones((2, 49), dtype=np.float32))
    with pytest.raises(ValueError, match="latent_dim is 4"):
        fitted.inverse_transform(np.ones((2, 3)))


def test_images_of_another_shape_with_as_many_pixels_are_refused(fitted):
    """A 4x16 image has the 64 pixels of an 8x8 one: it must not be read as one."""
    strips = np.random.default_rng(0).random((2, 4, 16, 1), dtype=np.float32)
    for method in (fitted.transform, fitted.score):
        with pytest.raises(ValueError, match=r"shape \(4, 16, 1\).*fitted on images of shape \(8, 8, 1\)"):
            method(strips)
    assert fitted.transform(strips.reshape(2, 64)).shape == (2, 4)  # rows carry no shape to check


def test_binary_crossentropy_needs_inputs_in_unit_range():
    with pytest.raises(ValueError, match=r'needs inputs in \[0, 1\].*loss="mse"'):
        AutoencoderEmbedder(loss="binary_crossentropy", **TINY).fit(np.full((20, 16), 3.0))
