"""The displays and plot_* functions of sklearn_imgretrieval.plotting."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from sklearn_imgretrieval import (  # noqa: E402
    ImagePreprocessor,
    NearestImageRetriever,
    find_duplicates,
    make_retrieval_pipeline,
)
from sklearn_imgretrieval.plotting import (  # noqa: E402
    EmbeddingDisplay,
    RetrievalDisplay,
    plot_duplicates,
    plot_embedding,
    plot_retrieval,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def gallery():
    return np.random.default_rng(0).random((12, 8, 8))


def _titles(axes):
    return [[ax.get_title() for ax in row] for row in axes]


def _frame(ax):
    spine = ax.spines["left"]
    return to_hex(spine.get_edgecolor()) if spine.get_visible() else None


def test_retrieval_display_from_predictions_draws_one_row_per_query(gallery):
    indices = [[0, 3, 5], [1, 4, 6]]
    distances = [[0.0, 0.25, 0.5], [0.0, 0.125, 0.75]]
    display = RetrievalDisplay.from_predictions(gallery[:2], gallery, indices, distances)
    assert isinstance(display.figure_, matplotlib.figure.Figure)
    assert display.axes_.shape == (2, 4)
    assert len(display.figure_.axes) == 8
    assert all(len(ax.images) == 1 for ax in display.figure_.axes)
    assert _titles(display.axes_) == [["query", "0", "0.25", "0.5"], ["query", "0", "0.125", "0.75"]]
    np.testing.assert_allclose(display.axes_[1, 2].images[0].get_array(), gallery[4])


def test_retrieval_display_ranks_and_frames_without_distances(gallery):
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    display = RetrievalDisplay.from_predictions(
        gallery[:1], gallery, [[2, 3]], query_labels=labels[:1], gallery_labels=labels
    )
    assert _titles(display.axes_) == [["query: 0", "#1", "#2"]]
    assert [_frame(ax) for ax in display.axes_[0]] == [None, "#2ca02c", "#d62728"]


def test_retrieval_display_query_titles_and_ax(gallery):
    fig, ax = plt.subplots()
    display = RetrievalDisplay.from_predictions(gallery[:2], gallery, [[1], [2]], query_titles=["a", "b"], ax=ax)
    assert display.figure_ is fig
    assert ax not in fig.axes  # replaced by the grid
    assert [row[0] for row in _titles(display.axes_)] == ["a", "b"]


def test_retrieval_display_from_estimator_matches_from_predictions(gallery):
    rows = gallery.reshape(len(gallery), -1)
    labels = np.arange(12) % 3
    retriever = NearestImageRetriever(n_neighbors=3).fit(rows, labels)
    queries = rows[[0, 5]] + 0.01
    from_estimator = RetrievalDisplay.from_estimator(retriever, queries, rows, query_labels=labels[[0, 5]])
    distances, indices = retriever.kneighbors(queries)
    from_predictions = RetrievalDisplay.from_predictions(
        queries, rows, indices, distances, query_labels=labels[[0, 5]], gallery_labels=labels
    )
    np.testing.assert_array_equal(from_estimator.indices, indices)
    np.testing.assert_allclose(from_estimator.distances, distances)
    assert _titles(from_estimator.axes_) == _titles(from_predictions.axes_)
    # the gallery labels come from the retriever, so the neighbours are framed
    assert [_frame(ax) for ax in from_estimator.axes_[0]] == [_frame(ax) for ax in from_predictions.axes_[0]]
    assert _frame(from_estimator.axes_[0, 1]) == "#2ca02c"
    assert from_estimator.axes_[0, 1].get_title() == f"{distances[0, 0]:.3g}"


def test_retrieval_display_from_pipeline_with_n_neighbors(gallery):
    pipe = make_retrieval_pipeline(ImagePreprocessor(), NearestImageRetriever(n_neighbors=5)).fit(gallery)
    display = RetrievalDisplay.from_estimator(pipe, gallery[:3], gallery, n_neighbors=2)
    assert display.axes_.shape == (3, 3)
    assert display.gallery_labels is None
    np.testing.assert_array_equal(display.indices[:, 0], [0, 1, 2])


def test_retrieval_display_refuses_bad_input(gallery):
    with pytest.raises(ValueError, match="n_queries=2"):
        RetrievalDisplay.from_predictions(gallery[:2], gallery, [[0, 1]])
    with pytest.raises(TypeError, match="kneighbors"):
        RetrievalDisplay.from_estimator(PCA(2).fit(gallery.reshape(12, -1)), gallery[:1], gallery)


def test_plot_retrieval_is_the_display_figure(gallery):
    indices, distances = [[0, 3], [1, 4]], [[0, 0.5], [0, 0.7]]
    fig = plot_retrieval(gallery[:2], gallery, indices, distances, query_titles=["x", "y"])
    display = RetrievalDisplay.from_predictions(gallery[:2], gallery, indices, distances, query_titles=["x", "y"])
    assert [ax.get_title() for ax in fig.axes] == [ax.get_title() for ax in display.figure_.axes]
    assert [ax.get_title() for ax in fig.axes][:3] == ["x", "0", "0.5"]


def test_embedding_display_from_predictions_projects_with_pca():
    X = np.random.default_rng(0).normal(size=(30, 6))
    labels = np.repeat(["a", "b", "c"], 10)
    display = EmbeddingDisplay.from_predictions(X, labels)
    assert isinstance(display.figure_, matplotlib.figure.Figure)
    assert display.ax_ in display.figure_.axes
    assert (display.ax_.get_xlabel(), display.ax_.get_ylabel()) == ("PCA 1", "PCA 2")
    assert [t.get_text() for t in display.ax_.get_legend().get_texts()] == ["a", "b", "c"]
    expected = PCA(2, random_state=0).fit_transform(X)
    np.testing.assert_allclose(display.points, expected)
    np.testing.assert_allclose(display.ax_.collections[1].get_offsets(), expected[10:20])


def test_embedding_display_two_features_drawn_as_they_are():
    X = np.arange(10.0).reshape(5, 2)
    display = EmbeddingDisplay.from_predictions(X)
    assert display.ax_.get_xlabel() == "feature 1"
    assert display.ax_.get_legend() is None
    np.testing.assert_allclose(display.ax_.collections[0].get_offsets(), X)


def test_embedding_display_from_estimator_matches_from_predictions():
    X = np.random.default_rng(1).normal(size=(25, 10))
    labels = np.arange(25) % 2
    pca = PCA(4).fit(X)
    from_estimator = EmbeddingDisplay.from_estimator(pca, X, labels, method="tsne")
    from_predictions = EmbeddingDisplay.from_predictions(pca.transform(X), labels, method="tsne")
    assert from_estimator.ax_.get_xlabel() == "t-SNE 1"
    np.testing.assert_allclose(from_estimator.points, from_predictions.points)
    with pytest.raises(ValueError, match="sparse"):
        EmbeddingDisplay.from_estimator(NearestImageRetriever(n_neighbors=2).fit(X), X)
    with pytest.raises(ValueError, match="method"):
        EmbeddingDisplay.from_predictions(X, method="umap")


def test_plot_embedding_draws_into_ax():
    fig, (left, right) = plt.subplots(1, 2)
    X = np.random.default_rng(2).normal(size=(20, 3))
    assert plot_embedding(X, np.arange(20) % 2, ax=right) is fig
    assert right.get_xlabel() == "PCA 1" and left.get_xlabel() == ""
    assert len(right.collections) == 2


def _twelve_groups(sizes=(2,) * 12):
    """Noise images and exact copies: one group of duplicates per entry of ``sizes``."""
    originals = np.random.default_rng(0).integers(0, 256, size=(len(sizes), 32, 32), dtype=np.uint8)
    images = np.concatenate([np.repeat(original[None], size, axis=0) for original, size in zip(originals, sizes)])
    found = find_duplicates(images, method="phash")
    assert [len(group) for group in found.groups] == list(sizes)
    return found, images


def _suptitle(fig):
    """The figure's title ("" when it has none); Figure.get_suptitle is matplotlib 3.8+ only."""
    title = getattr(fig, "_suptitle", None)
    return title.get_text() if title is not None else ""


def test_plot_duplicates_says_how_many_groups_it_left_out():
    found, images = _twelve_groups()
    fig = plot_duplicates(found, images)  # 10 groups drawn: once nothing said the other 2 were left out
    assert len(fig.axes) == 20
    assert _suptitle(fig) == "Showing the first 10 of 12 groups of duplicates (2 not drawn)"
    assert _suptitle(plot_duplicates(found, images, max_groups=12)) == ""  # all drawn: nothing to say
    fig = plot_duplicates(found, images, max_groups=11, max_per_group=1)
    assert _suptitle(fig) == (
        "Showing the first 11 of 12 groups of duplicates (1 not drawn); the first image of 11 larger groups"
    )


def test_plot_duplicates_into_an_axes_leaves_the_figures_title_alone():
    found, images = _twelve_groups((3, 2))
    fig, (left, right) = plt.subplots(1, 2)
    fig.suptitle("mine")
    plot_duplicates(found, images, max_groups=1, max_per_group=2, ax=right)
    assert _suptitle(fig) == "mine"
    assert [text.get_text() for text in fig.texts] == [  # the suptitle is one of them
        "mine",
        "Showing the first 1 of 2 groups of duplicates (1 not drawn); the first 2 images of 1 larger group",
    ]
