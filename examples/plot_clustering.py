"""
Clustering images: which embedding makes KMeans find the classes?
=================================================================

Five embeddings of scikit-learn's digits (upsampled to 16x16), none of them
trained on labels: raw pixels, PCA, a conv autoencoder, a
ContrastiveEmbedder and the pretrained EfficientNet-Lite0 features. For each,
the number of clusters is chosen as a user without labels would: KMeans for
k in a range, scored by the silhouette (higher is better) and the
Davies-Bouldin index (lower is better) on the embeddings. The labels then
judge the result: the adjusted Rand index (ARI) of the silhouette's choice
and of k = 10 against the true digits. The figure shows the silhouette over
k for each embedding and the best one's clusters in 2-D.

Run::

    python examples/plot_clustering.py

Set SKLEARN_IMGRETRIEVAL_SMOKE=1 for a seconds-long run with tiny training.
"""

import os
from pathlib import Path

from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score
from sklearn.pipeline import make_pipeline

from sklearn_imgretrieval import AutoencoderEmbedder, ContrastiveEmbedder, ImagePreprocessor, PretrainedCNNEmbedder
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.plotting import plot_embedding

SMOKE = bool(os.environ.get("SKLEARN_IMGRETRIEVAL_SMOKE"))
FIGURES = Path(os.environ.get("SKLEARN_IMGRETRIEVAL_FIGURES", "."))

images, labels = load_digits_images()
if SMOKE:
    images, labels = images[:200], labels[:200]
EPOCHS = 1 if SMOKE else 40
K_RANGE = range(6, 15, 2) if SMOKE else range(6, 15)

embedders = {
    "raw pixels": None,
    "PCA-32": PCA(32, random_state=0),
    "conv autoencoder": AutoencoderEmbedder(
        architecture="conv", latent_dim=16, hidden_units=(), epochs=EPOCHS, random_state=0
    ),
    "contrastive": ContrastiveEmbedder(
        latent_dim=32,
        filters=(16, 32) if SMOKE else (32, 64),
        epochs=EPOCHS,
        batch_size=128,
        crop_scale=(0.5, 1.0),
        horizontal_flip=False,  # a mirrored digit is another symbol (or none)
        random_state=0,
    ),
    "pretrained Lite0": PretrainedCNNEmbedder(input_size=32 if SMOKE else 64),
}

results = {}
print(f"{'embedding':<18} {'k by silhouette':>15} {'k by DB':>8} {'silhouette':>10} {'ARI':>6} {'ARI k=10':>9}")
for name, embedder in embedders.items():
    steps = [ImagePreprocessor(size=(16, 16))] + ([embedder] if embedder is not None else [])
    embeddings = make_pipeline(*steps).fit_transform(images)
    by_k = {}
    for k in K_RANGE:
        clusters = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(embeddings)
        by_k[k] = (silhouette_score(embeddings, clusters), davies_bouldin_score(embeddings, clusters), clusters)
    best_k = max(by_k, key=lambda k: by_k[k][0])
    best_db = min(by_k, key=lambda k: by_k[k][1])
    ten = KMeans(n_clusters=10, n_init=4, random_state=0).fit_predict(embeddings)
    ari, ari_ten = adjusted_rand_score(labels, by_k[best_k][2]), adjusted_rand_score(labels, ten)
    results[name] = dict(embeddings=embeddings, by_k=by_k, best_k=best_k, ari=ari, clusters=by_k[best_k][2])
    print(f"{name:<18} {best_k:>15} {best_db:>8} {by_k[best_k][0]:>10.3f} {ari:>6.3f} {ari_ten:>9.3f}")

import matplotlib.pyplot as plt  # noqa: E402  (after the work, so a missing matplotlib fails late)

best = max(results, key=lambda name: results[name]["ari"])
fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 5))
for name, result in results.items():
    ks = list(result["by_k"])
    left.plot(ks, [result["by_k"][k][0] for k in ks], marker="o", label=name)
left.set_xlabel("number of clusters k")
left.set_ylabel("silhouette (higher is better)")
left.legend()
plot_embedding(results[best]["embeddings"], results[best]["clusters"], method="pca", ax=middle)
middle.set_title(f"{best}: KMeans, {results[best]['best_k']} clusters (ARI {results[best]['ari']:.2f})")
plot_embedding(results[best]["embeddings"], labels, method="pca", ax=right)
right.set_title(f"{best}: true digit")
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "clustering.png", dpi=100, bbox_inches="tight")
print(f"wrote {FIGURES / 'clustering.png'}")
