"""The one place that imports scikit-learn's private helpers.

Parameter validation (``_param_validation``) and ``_fit_context`` are not
public API, so a scikit-learn release may move them; imbalanced-learn keeps
them behind one module for that reason, and so does this package: a release
that breaks them breaks this file only.
"""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import validate_data

__all__ = [
    "HasMethods",
    "Interval",
    "Options",
    "StrOptions",
    "_fit_context",
    "output_container",
    "validate_data",
    "validate_params",
]


def output_container(estimator, method="transform"):
    """The container ``set_output`` asked for: "default", "pandas" or "polars"."""
    return _get_output_config(method, estimator)["dense"]


def validate_params(estimator):
    """Check an estimator's parameters against its constraints without fitting it."""
    estimator._validate_params()
