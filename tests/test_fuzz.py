"""Property-based tests: ImagePreprocessor on arbitrary arrays, NearestImageRetriever against scikit-learn.

Examples are drawn from a fixed seed so that a run is repeatable; set
SKLEARN_IMGRETRIEVAL_FUZZ_EXAMPLES (for example to 2000) to explore more,
with a new seed each run.
"""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever

_EXPLORE = os.environ.get("SKLEARN_IMGRETRIEVAL_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXPLORE or 60),
    deadline=None,
    database=None,  # writes nothing into the checkout
    derandomize=not _EXPLORE,
    suppress_health_check=[HealthCheck.too_slow],
)

INTEGER_TYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64]
FLOAT_TYPES = [np.float16, np.float32, np.float64]


@st.composite
def pixel_arrays(draw, shapes):
    """Arrays of any pixel type, with values either in the type's documented range or anything at all."""
    dtype = np.dtype(draw(st.sampled_from([*INTEGER_TYPES, *FLOAT_TYPES, np.bool_])))
    shape = draw(shapes)
    in_range = draw(st.booleans())
    if dtype.kind == "f":
        elements = st.floats(0, 1, width=dtype.itemsize * 8) if in_range else st.floats(width=dtype.itemsize * 8)
    elif dtype.kind in "iu" and in_range and dtype not in (np.uint8, np.uint16):
        elements = st.integers(max(0, np.iinfo(dtype).min), min(255, np.iinfo(dtype).max))
    else:
        elements = None  # the whole range of the type
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _within_unit(array):
    """Whether ImagePreprocessor must map ``array`` into [0, 1]: integers it accepts, floats in [0, 1]."""
    return array.dtype.kind in "biu" or bool(np.all((array >= 0) & (array <= 1)))


def _check_output(rows, n_images, pre, inputs):
    assert rows.dtype == np.float32 and rows.shape == (n_images, math.prod(pre.image_shape_))
    assert np.isfinite(rows).all()
    if all(_within_unit(np.asarray(x)) for x in inputs):
        assert rows.min() >= 0 and rows.max() <= 1 + 1e-6  # the luma weights sum to 1 + 1 ulp in float32


PARAMETERS = st.fixed_dictionaries(
    {
        "size": st.none() | st.tuples(st.integers(1, 6), st.integers(1, 6)),
        "color_mode": st.sampled_from(["keep", "grayscale", "rgb"]),
        "crop": st.none() | st.just("center"),
    }
)
BATCH_SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12),  # flattened rows
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=6),  # (n, h, w)
    st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 6), st.integers(0, 5)),  # (n, h, w, c)
)
ITEM_SHAPES = st.one_of(
    st.tuples(st.integers(0, 6), st.integers(0, 6)),
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 5)),
)


def _fit_transform_or_clear_error(params, X):
    """Rows from fit_transform, or None after a ValueError/TypeError with a message."""
    try:
        rows = ImagePreprocessor(**params).fit_transform(X)
    except (ValueError, TypeError) as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        event(f"{type(exc).__name__}: {str(exc)[:40]}")  # --hypothesis-show-statistics lists them
        return None
    event("rows")
    return rows


@FUZZ
@given(params=PARAMETERS, images=pixel_arrays(BATCH_SHAPES))
def test_preprocessor_on_any_array_gives_unit_rows_or_a_clear_error(params, images):
    rows = _fit_transform_or_clear_error(params, images)
    if rows is not None:
        pre = ImagePreprocessor(**params).fit(images)
        _check_output(rows, images.shape[0], pre, [images])


@FUZZ
@given(params=PARAMETERS, items=st.lists(pixel_arrays(ITEM_SHAPES), min_size=1, max_size=4))
def test_preprocessor_on_lists_of_mixed_arrays(params, items):
    rows = _fit_transform_or_clear_error(params, items)
    if rows is not None:
        _check_output(rows, len(items), ImagePreprocessor(**params).fit(items), items)


VALID_BATCHES = st.one_of(
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),  # gray (n, h, w)
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 3, 4])),  # (n, h, w, c)
)


@st.composite
def valid_images(draw):
    """Batches every step must accept: 8-bit, 16-bit or [0, 1] float pixels of a real image shape."""
    shape = draw(VALID_BATCHES)
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64]))
    if np.dtype(dtype).kind == "f":
        return draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=np.dtype(dtype).itemsize * 8)))
    return draw(hnp.arrays(dtype, shape))


@FUZZ
@given(params=PARAMETERS, images=valid_images())
def test_preprocessor_on_valid_images_always_gives_rows(params, images):
    # the test above accepts a clear error; on valid images there must be none
    rows = ImagePreprocessor(**params).fit_transform(images)
    _check_output(rows, images.shape[0], ImagePreprocessor(**params).fit(images), [images])


@st.composite
def galleries(draw):
    n_gallery = draw(st.integers(2, 15))
    n_features = draw(st.integers(1, 4))
    # whole numbers on a coarse grid: ties happen, and every distance is exact enough to compare
    values = st.integers(-20, 20).map(float)
    gallery = draw(hnp.arrays(np.float64, (n_gallery, n_features), elements=values))
    queries = draw(hnp.arrays(np.float64, (draw(st.integers(1, 4)), n_features), elements=values))
    return gallery, queries


@FUZZ
@given(
    data=galleries(),
    metric=st.sampled_from(["euclidean", "manhattan", "chebyshev", "cosine"]),
    algorithm=st.sampled_from(["brute", "kd_tree", "ball_tree"]),
    k=st.integers(1, 15),
    leave_one_out=st.booleans(),
)
def test_retriever_agrees_with_scikit_learn(data, metric, algorithm, k, leave_one_out):
    gallery, queries = data
    k = min(k, len(gallery) - int(leave_one_out))
    X = None if leave_one_out else queries
    reference = NearestNeighbors(n_neighbors=k, metric=metric, algorithm=algorithm)
    try:
        reference.fit(gallery)
    except ValueError:  # a metric this tree does not support: the retriever must refuse it too
        with pytest.raises(ValueError):
            NearestImageRetriever(n_neighbors=k, metric=metric, algorithm=algorithm).fit(gallery)
        return
    retriever = NearestImageRetriever(n_neighbors=k, metric=metric, algorithm=algorithm).fit(gallery)
    distances, indices = retriever.kneighbors(X)
    expected_distances, _ = reference.kneighbors(X)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-7, atol=1e-9)
    # Among tied neighbours either may come first: each index must lie at its reported distance.
    rows = gallery if X is None else X
    true = pairwise_distances(rows, gallery, metric=metric)
    np.testing.assert_allclose(np.take_along_axis(true, indices, axis=1), distances, rtol=1e-7, atol=1e-9)
    assert all(len(set(row)) == k for row in indices.tolist())
    if X is None:
        assert not (indices == np.arange(len(gallery))[:, None]).any()  # nobody is its own neighbour
