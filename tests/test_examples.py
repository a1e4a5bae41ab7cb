"""Every example runs, in smoke mode, and writes the figures it promises."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

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
def test_example_runs_and_saves_its_figure(example, tmp_path):
    env = {
        **os.environ,
        "SKLEARN_IMGRETRIEVAL_SMOKE": "1",
        "SKLEARN_IMGRETRIEVAL_FIGURES": str(tmp_path),
        "MPLBACKEND": "Agg",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    done = subprocess.run([sys.executable, str(example)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    figure = tmp_path / FIGURES[example.name]
    assert f"wrote {figure}" in done.stdout
    with Image.open(figure) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) > 100  # one row of thumbnails at least
