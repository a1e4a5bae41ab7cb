"""Clustering images: preprocessor, embedder and KMeans in one Pipeline.

The number of clusters is chosen by two internal criteria computed on the
embeddings: the silhouette score (higher is better) and the Davies-Bouldin
index (lower is better). The figure shows the embeddings in 2-D, coloured
by the chosen clustering and by the true digit.

Run::

    python examples/plot_clustering.py

Set SKLEARN_IMGRETRIEVAL_SMOKE=1 for a seconds-long run with tiny training.
"""

import os
from pathlib import Path

from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score
from sklearn.pipeline import make_pipeline

from sklearn_imgretrieval import AutoencoderEmbedder, ImagePreprocessor
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.plotting import plot_embedding

SMOKE = bool(os.environ.get("SKLEARN_IMGRETRIEVAL_SMOKE"))
EPOCHS = 1 if SMOKE else 40
FIGURES = Path(os.environ.get("SKLEARN_IMGRETRIEVAL_FIGURES", "."))

images, labels = load_digits_images()
if SMOKE:
    images, labels = images[:300], labels[:300]

# Embed once, then try several numbers of clusters on the same embeddings.
embed = make_pipeline(
    ImagePreprocessor(size=(16, 16)),
    AutoencoderEmbedder(architecture="conv", latent_dim=16, hidden_units=(), epochs=EPOCHS, random_state=0),
)
embeddings = embed.fit_transform(images)

print(f"{'clusters':>8} {'silhouette':>11} {'Davies-Bouldin':>15}")
results = {}
for k in range(4, 15, 2):
    clusters = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(embeddings)
    results[k] = (silhouette_score(embeddings, clusters), davies_bouldin_score(embeddings, clusters))
    print(f"{k:>8} {results[k][0]:>11.3f} {results[k][1]:>15.3f}")
by_silhouette = max(results, key=lambda k: results[k][0])
by_davies_bouldin = min(results, key=lambda k: results[k][1])
print(f"best by silhouette: {by_silhouette}; by Davies-Bouldin: {by_davies_bouldin}")

# The whole thing as one estimator, with the silhouette's choice (the same
# random_state gives the same embeddings as above).
pipeline = make_pipeline(
    ImagePreprocessor(size=(16, 16)),
    AutoencoderEmbedder(architecture="conv", latent_dim=16, hidden_units=(), epochs=EPOCHS, random_state=0),
    KMeans(n_clusters=by_silhouette, n_init=10, random_state=0),
)
clusters = pipeline.fit_predict(images)
print(f"adjusted Rand index against the true digits: {adjusted_rand_score(labels, clusters):.3f}")

import matplotlib.pyplot as plt  # noqa: E402  (after the work, so a missing matplotlib fails late)

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
plot_embedding(embeddings, clusters, method="tsne", ax=left)
left.set_title(f"KMeans, {by_silhouette} clusters")
plot_embedding(embeddings, labels, method="tsne", ax=right)
right.set_title("true digit")
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "clustering.png", dpi=100, bbox_inches="tight")
print(f"wrote {FIGURES / 'clustering.png'}")
