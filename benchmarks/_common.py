"""Helpers shared by the benchmark scripts (run as ``python benchmarks/x.py``)."""

import json
import subprocess
import sys
import time

import numpy as np

#: scikit-image's bundled colour photos (inside its wheel, so offline).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def load_photos():
    """The bundled colour photos as RGB PIL images."""
    from PIL import Image
    from skimage import data

    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]


def random_resized_crop(photo, side_range, size, rng):
    """A crop of ``side_range`` (fractions of each side) at a random place, resized to ``size`` (W, H)."""
    from PIL import Image

    side = rng.uniform(*side_range)
    w, h = int(photo.width * side), int(photo.height * side)
    left, top = rng.integers(0, photo.width - w + 1), rng.integers(0, photo.height - h + 1)
    return photo.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))


def best_time(function, repeats=3):
    """The shortest of ``repeats`` wall-clock timings of ``function()``, in seconds."""
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def peak_rss_mb():
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def run_worker(script, task):
    """Run ``script --worker TASK`` in a fresh process and return the JSON its last line prints.

    A fresh process per measurement makes its peak memory its own.
    """
    done = subprocess.run(
        [sys.executable, script, "--worker", json.dumps(task)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"worker {task} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def retrieval_scores(zg, yg, zq, yq):
    """P@10 and 5-NN accuracy of cosine neighbours, and the ARI of KMeans (10 clusters) on the queries."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from sklearn_imgretrieval import NearestImageRetriever
    from sklearn_imgretrieval.metrics import knn_accuracy, precision_at_k

    retriever = NearestImageRetriever(n_neighbors=10, metric="cosine").fit(zg)
    labels = yg[retriever.kneighbors(zq, return_distance=False)]
    ari = adjusted_rand_score(yq, KMeans(n_clusters=10, n_init=4, random_state=0).fit_predict(zq))
    return precision_at_k(yq, labels, 10), knn_accuracy(yq, labels, 5), ari
