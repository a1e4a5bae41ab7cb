"""
Retrieval on scikit-learn's digits with each embedder, compared in one table
============================================================================

Every embedder sits in the same pipeline, ImagePreprocessor -> embedder ->
NearestImageRetriever, and is scored on the same gallery/query split with
``evaluate_retrieval``: precision@10, mAP@100 and 5-NN accuracy. The
figure shows a few queries and their neighbours under the best embedder.

Run::

    python examples/plot_compare_embedders.py

Set SKLEARN_IMGRETRIEVAL_SMOKE=1 for a seconds-long run with tiny training.
"""

import os
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

from sklearn_imgretrieval import (
    AutoencoderEmbedder,
    ImagePreprocessor,
    NearestImageRetriever,
    PretrainedCNNEmbedder,
    VAEEmbedder,
    make_retrieval_pipeline,
)
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.evaluation import evaluate_retrieval
from sklearn_imgretrieval.plotting import plot_retrieval

SMOKE = bool(os.environ.get("SKLEARN_IMGRETRIEVAL_SMOKE"))
EPOCHS = 1 if SMOKE else 40
FIGURES = Path(os.environ.get("SKLEARN_IMGRETRIEVAL_FIGURES", "."))

images, labels = load_digits_images()
if SMOKE:
    images, labels = images[:300], labels[:300]
X_gallery, X_query, y_gallery, y_query = train_test_split(
    images, labels, test_size=0.25, stratify=labels, random_state=0
)

# The digits are 8x8; 16x16 gives the conv networks room for two strided layers.
embedders = {
    "raw pixels": [],
    "PCA-16": [PCA(n_components=16, random_state=0)],
    "dense autoencoder": [AutoencoderEmbedder(latent_dim=16, hidden_units=(128,), epochs=EPOCHS, random_state=0)],
    "conv autoencoder": [
        AutoencoderEmbedder(architecture="conv", latent_dim=16, hidden_units=(), epochs=EPOCHS, random_state=0)
    ],
    "conv VAE": [VAEEmbedder(latent_dim=16, beta=0.5, epochs=EPOCHS, random_state=0)],
    "EfficientNet-Lite0 (ImageNet)": [PretrainedCNNEmbedder(input_size=64)],
}

print(f"{'embedder':<30} {'P@10':>6} {'mAP@100':>8} {'5-NN acc':>9} {'seconds':>8}")
pipelines = {}
for name, steps in embedders.items():
    pipe = make_retrieval_pipeline(
        ImagePreprocessor(size=(16, 16)), *steps, NearestImageRetriever(n_neighbors=8, metric="cosine")
    )
    started = time.perf_counter()
    scores = evaluate_retrieval(pipe, X_gallery, y_gallery, X_query, y_query, k=10, map_k=100, knn_k=5)
    seconds = time.perf_counter() - started
    print(
        f"{name:<30} {scores['precision@10']:>6.3f} {scores['map@100']:>8.3f} "
        f"{scores['knn_accuracy@5']:>9.3f} {seconds:>8.1f}"
    )
    pipelines[name] = (scores["precision@10"], steps)

best = max(pipelines, key=lambda name: pipelines[name][0])
pipe = make_retrieval_pipeline(
    ImagePreprocessor(size=(16, 16)), *pipelines[best][1], NearestImageRetriever(n_neighbors=8, metric="cosine")
).fit(X_gallery, y_gallery)
shown = np.arange(6) * (len(X_query) // 6)
distances, indices = pipe.kneighbors(X_query[shown])
fig = plot_retrieval(
    X_query[shown], X_gallery, indices, distances, query_labels=y_query[shown], gallery_labels=y_gallery
)
fig.suptitle(f"digits: neighbours under the best embedder, {best}", fontsize=10)
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "compare_embedders.png", dpi=100, bbox_inches="tight")
print(f"best: {best}; wrote {FIGURES / 'compare_embedders.png'}")
