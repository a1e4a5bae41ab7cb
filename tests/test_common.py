"""scikit-learn's estimator checks, and this library's own, on every public estimator.

The estimators are found by walking the package, so a new one cannot be
forgotten; the only place a check may be expected to fail is
``EXPECTED_FAILED_CHECKS``, with its reason.
"""

import importlib
import inspect
import pkgutil

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklearn_imgretrieval
from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, RetrievalPipeline
from sklearn_imgretrieval.estimator_checks import yield_checks

# scikit-learn's check data are normal-distributed features, not pixels in [0, 1]: the
# estimators' warning about the pixels' range is expected there.
pytestmark = pytest.mark.filterwarnings("ignore:.* was given float pixels from:UserWarning")

#: Settings that keep the checks fast; the estimators' defaults stay untouched.
CHECK_PARAMS = {
    "AutoencoderEmbedder": dict(latent_dim=2, hidden_units=(8,), epochs=2, batch_size=16, random_state=0),
    # scikit-learn's check data are not images in [0, 1]: dense rows, Gaussian likelihood
    "VAEEmbedder": dict(
        latent_dim=2, architecture="dense", hidden_units=(8,), loss="mse", epochs=2, batch_size=16, random_state=0
    ),
    # scikit-learn's check data are rows of a few features, not images: declared strips one pixel
    # high (image_shape=(1, -1), since other row lengths than square images are refused), resized
    # to 8x8 inside the network
    "ContrastiveEmbedder": dict(
        latent_dim=2,
        filters=(4,),
        projection_units=(4,),
        input_size=8,
        epochs=1,
        batch_size=128,
        image_shape=(1, -1),
        random_state=0,
    ),
    # random weights at the smallest input Lite0 takes: the checks test the wrapper, not ImageNet;
    # the check data declared strips one pixel high, as for ContrastiveEmbedder. On Keras: exporting
    # Lite0 to ONNX at each of the checks' fits added 80 s to this module (140 s against 61 s); the
    # other embedders' checks run the ONNX Runtime path they share, and tests/test_inference.py runs
    # Lite0 on it.
    "PretrainedCNNEmbedder": dict(
        weights=None, input_size=32, batch_size=16, image_shape=(1, -1), inference="keras", random_state=0
    ),
}

#: Every search algorithm of the retriever goes through the checks.
RETRIEVER_ALGORITHMS = ("auto", "brute", "kd_tree", "ball_tree", "flat", "ivf", "hnsw", "ivfpq")

#: check name -> reason, per estimator class name. The only place a check may
#: be expected to fail.
EXPECTED_FAILED_CHECKS = {
    "RetrievalPipeline": {
        check: (
            "Pipeline fits the estimators in its `steps` in place, so `steps` changes during fit; "
            "scikit-learn's own Pipeline fails this check the same way"
        )
        for check in ("check_estimators_overwrite_params", "check_dont_overwrite_parameters")
    },
}


def all_estimators():
    """Every public estimator class defined in the package, found by importing each module."""
    found = {}
    for module_info in pkgutil.walk_packages(sklearn_imgretrieval.__path__, "sklearn_imgretrieval."):
        if module_info.name.endswith("__main__") or ".cli" in module_info.name or ".serve" in module_info.name:
            continue  # applications of the estimators, not estimators
        module = importlib.import_module(module_info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, BaseEstimator)
                and obj.__module__.startswith("sklearn_imgretrieval")
                and not name.startswith("_")
                and name in sklearn_imgretrieval.__all__
            ):
                found[name] = obj
    return [found[name] for name in sorted(found)]


def _instances():
    for cls in all_estimators():
        if cls is RetrievalPipeline:
            # color_mode fixed: partial_fit on an unfitted pipeline refuses color_mode="keep",
            # which would take its channels from the first chunk (tests/test_pipeline.py).
            preprocess = ImagePreprocessor(color_mode="grayscale")
            yield RetrievalPipeline([("preprocess", preprocess), ("search", NearestImageRetriever())])
        elif cls is NearestImageRetriever:
            for algorithm in RETRIEVER_ALGORITHMS:
                yield cls(algorithm=algorithm, random_state=0)
        else:
            yield cls(**CHECK_PARAMS.get(cls.__name__, {}))


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


def _builds_a_network(estimator):
    """The Keras embedders: their checks build and train networks (the ``network`` marker)."""
    return type(estimator).__module__.startswith("sklearn_imgretrieval.embedders")


def test_every_public_estimator_is_found():
    public = {
        name
        for name in sklearn_imgretrieval.__all__
        if inspect.isclass(getattr(sklearn_imgretrieval, name))
        and issubclass(getattr(sklearn_imgretrieval, name), BaseEstimator)
    }
    assert {cls.__name__ for cls in all_estimators()} == public
    assert {"ImagePreprocessor", "NearestImageRetriever", "RetrievalPipeline", "PretrainedCNNEmbedder"} <= public


@parametrize_with_checks(
    [e for e in _instances() if not _builds_a_network(e)], expected_failed_checks=_expected_failed_checks
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.network
@parametrize_with_checks(
    [e for e in _instances() if _builds_a_network(e)], expected_failed_checks=_expected_failed_checks
)
def test_sklearn_compatible_network(estimator, check):
    check(estimator)


def _library_checks():
    for estimator in _instances():
        marks = [pytest.mark.network] if _builds_a_network(estimator) else []
        for check in yield_checks(estimator):
            yield pytest.param(estimator, check, id=f"{estimator!r:.60}-{check.__name__}", marks=marks)


@pytest.mark.parametrize("estimator, check", list(_library_checks()))
def test_library_contract(estimator, check):
    check(type(estimator).__name__, estimator)
