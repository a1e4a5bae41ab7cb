"""
Tuning an embedding for retrieval with GridSearchCV
===================================================

The grid spans the embedder (autoencoder size, PCA as an alternative step)
and the retriever (metric). ``make_retrieval_scorer`` scores each
validation fold leave-one-out: every fold image queries the rest of the
fold, so the score is the precision@10 a user would see. The figure plots
the mean validation score of every candidate.

Run::

    python examples/plot_grid_search.py

Set SKLEARN_IMGRETRIEVAL_SMOKE=1 for a seconds-long run with tiny training.
"""

import os
from pathlib import Path

from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV

from sklearn_imgretrieval import AutoencoderEmbedder, ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
from sklearn_imgretrieval.datasets import load_digits_images
from sklearn_imgretrieval.evaluation import make_retrieval_scorer

SMOKE = bool(os.environ.get("SKLEARN_IMGRETRIEVAL_SMOKE"))
EPOCHS = 1 if SMOKE else 30
FIGURES = Path(os.environ.get("SKLEARN_IMGRETRIEVAL_FIGURES", "."))

images, labels = load_digits_images()
if SMOKE:
    images, labels = images[:300], labels[:300]

pipe = make_retrieval_pipeline(
    ImagePreprocessor(size=(16, 16)),
    AutoencoderEmbedder(architecture="conv", hidden_units=(), epochs=EPOCHS, random_state=0),
    NearestImageRetriever(n_neighbors=10),
)
# Steps are named after their classes, as make_pipeline names them.
grid = [
    {
        "autoencoderembedder__latent_dim": [8, 32],
        "nearestimageretriever__metric": ["euclidean", "cosine"],
    },
    {
        "autoencoderembedder": [PCA(random_state=0)],
        "autoencoderembedder__n_components": [8, 32],
        "nearestimageretriever__metric": ["euclidean", "cosine"],
    },
]
# n_jobs=2 runs candidates in two loky worker processes (never fork with Keras).
search = GridSearchCV(pipe, grid, scoring=make_retrieval_scorer("precision", k=10), cv=3, n_jobs=2)
search.fit(images, labels)

results = search.cv_results_
names = []
for params in results["params"]:
    if "autoencoderembedder__n_components" in params:  # the PCA grid
        kind = f"PCA-{params['autoencoderembedder__n_components']}"
    else:
        kind = f"conv AE-{params['autoencoderembedder__latent_dim']}"
    names.append(f"{kind}, {params['nearestimageretriever__metric']}")
for name, mean, std in zip(names, results["mean_test_score"], results["std_test_score"]):
    print(f"{name:<26} precision@10 {mean:.3f} +- {std:.3f}")
print(f"best: {names[search.best_index_]} ({search.best_score_:.3f})")

import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.barh(names, results["mean_test_score"], xerr=results["std_test_score"], color="tab:blue")
ax.set_xlabel("precision@10, leave-one-out on the validation folds")
ax.set_xlim(min(results["mean_test_score"]) - 0.1, 1)
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "grid_search.png", dpi=100, bbox_inches="tight")
print(f"wrote {FIGURES / 'grid_search.png'}")
