"""ContrastiveEmbedder, its random views and the NT-Xent loss."""

import pickle
import random

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sklearn_imgretrieval import ContrastiveEmbedder, NearestImageRetriever, make_retrieval_pipeline
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.embedders._augmentation import RandomView
from sklearn_imgretrieval.embedders._layers import nt_xent

pytestmark = pytest.mark.network  # every test trains a Keras network

TINY = dict(latent_dim=8, filters=(8, 16), projection_units=(16, 8), epochs=2, batch_size=80, random_state=0)


@pytest.fixture(scope="module")
def digits():
    """The digits at 16x16 (the encoder needs 8x8 or more after the crops)."""
    images, labels = load_digits_images()
    images = np.asarray(keras.ops.image.resize(images[:400, :, :, None], (16, 16)))
    return images, labels[:400]


@pytest.fixture(scope="module")
def fitted(digits):
    images, _ = digits
    return ContrastiveEmbedder(**TINY).fit(images)


# ------------------------------------------------------------ the pieces
def test_nt_xent_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 4)).astype(np.float32)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    logits = unit @ unit.T / 0.5
    expected = []
    for i in range(6):
        others = [j for j in range(6) if j != i]
        positive = (i + 3) % 6  # rows i and i + n are the two views of one image
        expected.append(np.log(np.exp(logits[i, others]).sum()) - logits[i, positive])
    assert float(nt_xent(z, 0.5)) == pytest.approx(np.mean(expected), rel=1e-5)
    # two identical views far from the others: the loss goes to its floor, log(1) = 0 at low temperature
    separated = np.concatenate([np.eye(3), np.eye(3)]).astype(np.float32)
    assert float(nt_xent(separated, 0.05)) < 1e-6


def test_random_view_crops_flips_and_jitters_per_image():
    images = np.random.default_rng(0).random((8, 12, 12, 3), dtype=np.float32)
    identity = RandomView(crop_scale=(1, 1), crop_ratio=(1, 1), horizontal_flip=False)
    np.testing.assert_allclose(np.asarray(identity(images)), images, atol=1e-6)
    flipped = np.asarray(RandomView(crop_scale=(1, 1), crop_ratio=(1, 1), seed=3)(images))
    mirrored = [np.allclose(v, x[:, ::-1], atol=1e-6) for v, x in zip(flipped, images)]
    kept = [np.allclose(v, x, atol=1e-6) for v, x in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    views = RandomView(crop_scale=(0.3, 0.6), brightness=0.2, contrast=0.2, saturation=0.5, grayscale=0.5, seed=1)
    first, second = np.asarray(views(images)), np.asarray(views(images))
    assert first.shape == images.shape and not np.allclose(first, second)  # each call draws anew
    again = RandomView(crop_scale=(0.3, 0.6), brightness=0.2, contrast=0.2, saturation=0.5, grayscale=0.5, seed=1)
    np.testing.assert_array_equal(np.asarray(again(images)), first)  # a function of the seed
    gray = [np.allclose(v[..., 0], v[..., 1]) and np.allclose(v[..., 1], v[..., 2]) for v in first]
    assert 0 < sum(gray) < len(gray)


# --------------------------------------------------------------- embedder
def test_embeddings_are_normalised_encoder_outputs(fitted, digits):
    images, _ = digits
    embeddings = fitted.transform(images)
    assert embeddings.shape == (400, 8) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, rtol=1e-5)
    raw = fitted._predict(fitted.encoder_, images.reshape(400, -1))  # the encoder, not the projection head
    np.testing.assert_allclose(embeddings, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    unnormalised = ContrastiveEmbedder(normalize=False, **TINY).fit(images).transform(images)
    np.testing.assert_allclose(unnormalised, raw, rtol=1e-5, atol=1e-6)  # same seed, same network
    assert fitted.n_iter_ == len(fitted.history_["loss"]) == 2


def test_without_latent_dim_the_embedding_is_the_flattened_feature_map(digits):
    images, _ = digits
    embedder = ContrastiveEmbedder(**{**TINY, "latent_dim": None, "epochs": 1}).fit(images[:80])
    # two stride-2 convolutions take 16x16 to 4x4, with 16 channels
    assert embedder.n_features_out_ == 4 * 4 * 16
    assert embedder.transform(images[:3]).shape == (3, 256)
    assert len(embedder.get_feature_names_out()) == 256


def test_training_lowers_the_loss_and_raises_the_score(digits):
    images, _ = digits
    short = ContrastiveEmbedder(**{**TINY, "epochs": 1}).fit(images)
    longer = ContrastiveEmbedder(**{**TINY, "epochs": 30}).fit(images)
    assert longer.history_["loss"][-1] < longer.history_["loss"][0]
    assert 0 <= short.score(images) < longer.score(images) <= 1
    assert longer.score(images) == longer.score(images)  # fixed views: a deterministic score


def test_same_seed_same_embeddings_and_no_global_random_state_touched(fitted, digits):
    images, _ = digits
    random.seed(123)
    np.random.seed(123)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    again = ContrastiveEmbedder(**TINY).fit(images)
    np.testing.assert_array_equal(again.transform(images), fitted.transform(images))
    assert random.getstate() == python_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))
    other = ContrastiveEmbedder(**{**TINY, "random_state": 1}).fit(images)
    assert not np.allclose(other.transform(images), fitted.transform(images))


def test_pickle_round_trip_keeps_the_embeddings(fitted, digits):
    images, _ = digits
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))
    assert loaded.score(images) == fitted.score(images)


def test_rgb_rows_and_input_size(digits):
    images, _ = digits
    rgb = np.repeat(images[:64], 3, axis=3).reshape(64, -1)  # square RGB rows: the shape is inferred
    embedder = ContrastiveEmbedder(input_size=12, **TINY).fit(rgb)
    assert embedder.image_shape_ == (16, 16, 3)
    assert embedder.encoder_.get_layer("prepare").output.shape[1:] == (12, 12, 3)
    assert embedder.transform(rgb).shape == (64, 8)


def test_lite0_encoder_trains_a_head_on_the_frozen_backbone(digits):
    images, _ = digits
    embedder = ContrastiveEmbedder(encoder="lite0", input_size=32, hidden_units=(16,), **TINY).fit(images[:64])
    backbone = embedder.encoder_.get_layer("trunk").get_layer("efficientnet_lite0")
    assert not backbone.trainable
    assert embedder.transform(images[:5]).shape == (5, 8)


def test_in_a_retrieval_pipeline_with_grid_search(digits):
    images, labels = digits
    pipe = make_retrieval_pipeline(ContrastiveEmbedder(**TINY), NearestImageRetriever(n_neighbors=5, metric="cosine"))
    search = GridSearchCV(pipe, {"contrastiveembedder__temperature": [0.1, 0.5]}, cv=2, refit=False)
    search.fit(images, labels)
    assert search.cv_results_["mean_test_score"].min() > 0.3  # random neighbours give 0.1


# ------------------------------------------------------------------ errors
def test_clear_errors_before_training(digits):
    images, _ = digits
    with pytest.raises(ValueError, match=r"batch_size=1.*at least 2 images"):
        ContrastiveEmbedder(**{**TINY, "batch_size": 1}).fit(images)
    with pytest.raises(ValueError, match=r"temperature"):
        ContrastiveEmbedder(temperature=0, **{k: v for k, v in TINY.items()}).fit(images)
    with pytest.raises(ValueError, match=r"6x6 images.*at least 8x8.*input_size"):
        ContrastiveEmbedder(**TINY).fit(images[:, :6, :6])
    with pytest.raises(ValueError, match=r"crop_scale=\(0.01, 1.0\).*1.4 pixels.*at least 2"):
        ContrastiveEmbedder(crop_scale=(0.01, 1.0), **TINY).fit(images)
    with pytest.raises(ValueError, match=r"crop_scale must be a pair \(low, high\) with 0 < low <= high <= 1"):
        ContrastiveEmbedder(crop_scale=(0.5, 1.5), **TINY).fit(images)
    with pytest.raises(ValueError, match="n_samples=1"):
        ContrastiveEmbedder(**TINY).fit(images[:1])
    with pytest.raises(ValueError, match="encoder='lite0' takes images of at least 32x32"):
        ContrastiveEmbedder(encoder="lite0", input_size=16, **TINY).fit(images)
    # rows that are not square images (once read as strips one pixel high)
    with pytest.raises(ValueError, match=r"rows with 1000 features.*Set image_shape="):
        ContrastiveEmbedder(**TINY).fit(np.random.default_rng(0).random((4, 1000), dtype=np.float32))


def test_clone_keeps_the_parameters(fitted):
    assert clone(fitted).get_params() == fitted.get_params()
