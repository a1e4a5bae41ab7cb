"""Every example runs, in smoke mode, and writes the figures it promises."""

import runpy
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.network  # the examples build Keras networks

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("plot_*.py"))
FIGURES = {
    "plot_compare_embedders.py": "compare_embedders.png",
    "plot_clustering.py": "clustering.png",
    "plot_grid_search.py": "grid_search.png",
    "plot_persistence.py": "persistence.png",
    "plot_photo_folder.py": "photo_folder.png",
}


def test_every_example_is_listed():
    assert {path.name for path in EXAMPLES} == set(FIGURES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_runs_and_saves_its_figure(example, tmp_path, monkeypatch, capsys):
    """Run as sphinx-gallery runs examples: as ``__main__`` in this process, so
    that TensorFlow is started once per test worker rather than once per example."""
    plt = pytest.importorskip("matplotlib.pyplot", reason="matplotlib is not installed: the examples plot (test extra)")
    plt.switch_backend("Agg")
    monkeypatch.setenv("SKLEARN_IMGRETRIEVAL_SMOKE", "1")
    monkeypatch.setenv("SKLEARN_IMGRETRIEVAL_FIGURES", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    try:
        runpy.run_path(str(example), run_name="__main__")
    finally:
        plt.close("all")
    figure = tmp_path / FIGURES[example.name]
    assert f"wrote {figure}" in capsys.readouterr().out
    with Image.open(figure) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) > 100  # one row of thumbnails at least
