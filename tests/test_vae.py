import pickle

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline

from sklearn_imgretrieval import ImagePreprocessor, VAEEmbedder
from sklearn_imgretrieval.datasets import load_digits_images

pytestmark = pytest.mark.network  # every test trains a Keras network

TINY = dict(latent_dim=3, hidden_units=(16,), filters=(4, 8), epochs=2, batch_size=32, random_state=0)


@pytest.fixture(scope="module")
def images():
    return load_digits_images()[0][:200, :, :, None]


@pytest.fixture(scope="module")
def fitted(images):
    return VAEEmbedder(**TINY).fit(images)


def test_posterior_mean_is_deterministic_and_sample_decodes_the_prior(fitted, images):
    first = fitted.transform(images)
    np.testing.assert_array_equal(first, fitted.transform(images))
    assert first.shape == (200, 3) and first.dtype == np.float32
    samples = fitted.sample(4, random_state=0)
    assert samples.shape == (4, 8, 8, 1) and samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, fitted.sample(4, random_state=0))
    assert not np.array_equal(samples, fitted.sample(4, random_state=1))
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        fitted.sample(0)


def test_same_seed_same_embeddings(images):
    np.testing.assert_array_equal(
        VAEEmbedder(**TINY).fit(images).transform(images), VAEEmbedder(**TINY).fit(images).transform(images)
    )


def test_score_is_the_negative_elbo_at_the_posterior_mean(fitted, images):
    rows = images.reshape(len(images), -1)
    mean, log_var = (np.asarray(a) for a in fitted.encoder_.predict(rows, verbose=0))
    p = np.clip(fitted.inverse_transform(mean).reshape(len(rows), -1), 1e-7, 1 - 1e-7)
    reconstruction = -np.sum(rows * np.log(p) + (1 - rows) * np.log(1 - p), axis=1)
    kl = -0.5 * np.sum(1 + log_var - mean**2 - np.exp(log_var), axis=1)
    assert fitted.score(images) == pytest.approx(-np.mean(reconstruction + kl), rel=1e-4)


def test_training_improves_the_elbo(images):
    short = VAEEmbedder(**{**TINY, "epochs": 1}).fit(images)
    longer = VAEEmbedder(**{**TINY, "epochs": 12, "patience": 12}).fit(images)
    assert longer.score(images) > short.score(images)


def test_beta_weighs_the_kl_term(images):
    # A heavier KL term pulls the posterior means towards the prior's 0.
    loose = VAEEmbedder(**{**TINY, "beta": 0.01, "epochs": 6}).fit(images)
    tight = VAEEmbedder(**{**TINY, "beta": 20.0, "epochs": 6}).fit(images)
    assert np.abs(tight.transform(images)).mean() < np.abs(loose.transform(images)).mean()


@pytest.mark.parametrize("architecture", ["dense", "conv"])
def test_kmeans_pipeline(images, architecture):
    labels = make_pipeline(
        ImagePreprocessor(size=(8, 8)),
        VAEEmbedder(architecture=architecture, **TINY),
        KMeans(4, n_init=2, random_state=0),
    ).fit_predict(images)
    assert labels.shape == (200,) and len(set(labels)) == 4


def test_pickle_round_trip(fitted, images):
    loaded = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))
    np.testing.assert_array_equal(loaded.sample(2, random_state=3), fitted.sample(2, random_state=3))


def test_warm_start_and_feature_names(images):
    vae = VAEEmbedder(warm_start=True, **TINY).fit(images)
    vae.fit(images)
    assert vae.n_iter_ == 4
    assert list(vae.get_feature_names_out()) == ["vaeembedder0", "vaeembedder1", "vaeembedder2"]


def test_errors(images):
    with pytest.raises(ValueError, match=r"needs inputs in \[0, 1\]"):
        VAEEmbedder(**TINY).fit(images * 2)
    with pytest.raises(ValueError, match="latent_dim=3 is larger"):
        VAEEmbedder(**{**TINY, "architecture": "dense"}).fit(np.full((10, 2), 0.5))
    bad = images.reshape(len(images), -1).copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        VAEEmbedder(**TINY).fit(bad)
