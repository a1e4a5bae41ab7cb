"""scikit-learn's estimator checks on every public estimator of the package."""

import inspect

from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklearn_imgretrieval

#: Settings that keep the checks fast; the estimators' defaults stay untouched.
CHECK_PARAMS = {
    "AutoencoderEmbedder": dict(latent_dim=2, hidden_units=(8,), epochs=2, batch_size=16, random_state=0),
    # scikit-learn's check data are not images in [0, 1]: dense rows, Gaussian likelihood
    "VAEEmbedder": dict(
        latent_dim=2, architecture="dense", hidden_units=(8,), loss="mse", epochs=2, batch_size=16, random_state=0
    ),
    # scikit-learn's check data are rows of a few features, not images: resized to 8x8 inside the network
    "ContrastiveEmbedder": dict(
        latent_dim=2, filters=(4,), projection_units=(4,), input_size=8, epochs=1, batch_size=128, random_state=0
    ),
    # random weights at the smallest input Lite0 takes: the checks test the wrapper, not ImageNet
    "PretrainedCNNEmbedder": dict(weights=None, input_size=32, batch_size=16, random_state=0),
}

#: check name -> reason, per estimator class name. The only place a check may
#: be expected to fail.
EXPECTED_FAILED_CHECKS = {}


def all_estimators():
    """Every public estimator class, found from the package's ``__all__``."""
    found = []
    for name in sklearn_imgretrieval.__all__:
        obj = getattr(sklearn_imgretrieval, name)
        if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
            found.append(obj)
    return found


def _instances():
    for cls in all_estimators():
        if cls.__name__ == "RetrievalPipeline":
            continue  # a meta-estimator; tested through the pipelines in test_pipeline.py
        yield cls(**CHECK_PARAMS.get(cls.__name__, {}))


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


def test_all_estimators_found():
    names = {cls.__name__ for cls in all_estimators()}
    assert {"ImagePreprocessor", "NearestImageRetriever", "RetrievalPipeline"} <= names


@parametrize_with_checks(list(_instances()), expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
