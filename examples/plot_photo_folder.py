"""
Indexing a folder of photos and plotting the neighbours of a query
==================================================================

Builds a folder of photos from scikit-image's bundled images (several
crops of each, in one subfolder per photo), lists it with
``load_image_folder``, indexes it with EfficientNet-Lite0 features (ImageNet
weights that ship with the package, so this runs offline) and asks for the
neighbours of a new crop. The same steps on the command line::

    imgretrieval index PHOTOS/ -o photos.idx
    imgretrieval query photos.idx query.jpg --plot answers.png

Run::

    python examples/plot_photo_folder.py

Set SKLEARN_IMGRETRIEVAL_SMOKE=1 for a seconds-long run.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from sklearn_imgretrieval import (
    ImagePreprocessor,
    NearestImageRetriever,
    PretrainedCNNEmbedder,
    make_retrieval_pipeline,
)
from sklearn_imgretrieval.datasets import load_image_folder
from sklearn_imgretrieval.plotting import plot_retrieval

SMOKE = bool(os.environ.get("SKLEARN_IMGRETRIEVAL_SMOKE"))
SIZE = 64 if SMOKE else 224
FIGURES = Path(os.environ.get("SKLEARN_IMGRETRIEVAL_FIGURES", "."))
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field"]

rng = np.random.default_rng(0)
with tempfile.TemporaryDirectory() as folder:
    for name in PHOTOS:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        (Path(folder) / name).mkdir()
        for i in range(2 if SMOKE else 5):
            side = rng.uniform(0.5, 0.8)
            w, h = int(photo.width * side), int(photo.height * side)
            left, top = rng.integers(0, photo.width - w), rng.integers(0, photo.height - h)
            photo.crop((left, top, left + w, top + h)).save(Path(folder) / name / f"{name}_{i}.jpg", quality=85)
    paths, labels, class_names = load_image_folder(folder)
    print(f"{len(paths)} photos in {len(class_names)} folders: {', '.join(class_names)}")

    pipe = make_retrieval_pipeline(
        ImagePreprocessor(size=(SIZE, SIZE), color_mode="rgb", crop="center"),
        PretrainedCNNEmbedder(),
        NearestImageRetriever(n_neighbors=5, metric="cosine"),
    ).fit(paths, labels)

    # A query the index has not seen: a different crop of the cat, mirrored.
    cat = Image.fromarray(data.chelsea())
    query = cat.crop((30, 20, 330, 280)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    distances, indices = pipe.kneighbors([query])
    for rank, (i, d) in enumerate(zip(indices[0], distances[0]), start=1):
        print(f"{rank}. {Path(paths[i]).relative_to(folder)}  distance {d:.3f}")

    preprocess = ImagePreprocessor(size=(96, 96), color_mode="rgb", crop="center", flatten=False)
    fig = plot_retrieval(
        preprocess.fit_transform([query]),
        preprocess.transform(paths),
        indices,
        distances,
        query_labels=[class_names.index("chelsea")],
        gallery_labels=labels,
    )
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "photo_folder.png", dpi=100, bbox_inches="tight")
print(f"wrote {FIGURES / 'photo_folder.png'}")
