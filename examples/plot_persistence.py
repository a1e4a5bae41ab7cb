"""
Saving a fitted retrieval pipeline and querying it elsewhere
============================================================

A fitted pipeline (preprocessor, conv autoencoder, retriever with its
gallery) is one object: ``sklearn_imgretrieval.save`` writes it,
``sklearn_imgretrieval.load`` in a new Python process gives the same
neighbours. The file holds arrays and plain data only, so loading it runs no
code from it; Keras networks travel as their weight arrays, so it loads on
any Keras backend.

Run::

    python examples/plot_persistence.py

Set SKLEARN_IMGRETRIEVAL_SMOKE=1 for a seconds-long run with tiny training.
"""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from sklearn_imgretrieval import (
    AutoencoderEmbedder,
    ImagePreprocessor,
    NearestImageRetriever,
    make_retrieval_pipeline,
    save,
)
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.plotting import plot_retrieval

SMOKE = bool(os.environ.get("SKLEARN_IMGRETRIEVAL_SMOKE"))
EPOCHS = 1 if SMOKE else 30
FIGURES = Path(os.environ.get("SKLEARN_IMGRETRIEVAL_FIGURES", "."))

images, labels = load_digits_images()
gallery, queries = images[:1500], images[1500:1505]
pipe = make_retrieval_pipeline(
    ImagePreprocessor(size=(16, 16)),
    AutoencoderEmbedder(architecture="conv", latent_dim=16, hidden_units=(), epochs=EPOCHS, random_state=0),
    NearestImageRetriever(n_neighbors=6, metric="cosine"),
).fit(gallery, labels[:1500])
distances, indices = pipe.kneighbors(queries)

with tempfile.TemporaryDirectory() as folder:
    model_file = Path(folder) / "digits-index.skops"
    save(pipe, model_file)
    print(f"saved the fitted pipeline: {model_file.stat().st_size / 1e6:.1f} MB")
    np.save(Path(folder) / "queries.npy", queries)
    # A new interpreter: nothing of this process is shared but the files.
    script = textwrap.dedent(
        f"""
        import numpy as np
        from sklearn_imgretrieval import load
        pipe = load({str(model_file)!r})
        distances, indices = pipe.kneighbors(np.load({str(Path(folder) / "queries.npy")!r}))
        np.save({str(Path(folder) / "indices.npy")!r}, indices)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    loaded_indices = np.load(Path(folder) / "indices.npy")

print("neighbours in this process:\n", indices)
print("neighbours in a fresh process:\n", loaded_indices)
print("identical:", np.array_equal(indices, loaded_indices))

fig = plot_retrieval(
    queries, gallery, loaded_indices, distances, query_labels=labels[1500:1505], gallery_labels=labels[:1500]
)
fig.suptitle("answers of the pipeline loaded in a fresh process", fontsize=10)
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "persistence.png", dpi=100, bbox_inches="tight")
print(f"wrote {FIGURES / 'persistence.png'}")
