"""Filtered search: exactly k answers, recall against exact filtered search, time against unfiltered and post-filtering.

The data are bench_search.py's recipe: Fashion-MNIST PCA-128 vectors of all
70,000 images, repeated with Gaussian jitter up to N rows, and 1,000
held-out jittered queries. Synthetic metadata: a ``folder`` column of 100
values (the files' folders) and a ``day`` column of dates over three years, both
uniform at random; the
filters are parsed by ``ImageIndex.select`` (the same code as ``where=``) on
an index of those columns, and the mask goes into the search
(``NearestImageRetriever.kneighbors(subset=...)``).

1. For each algorithm at its defaults and each filter (1%, 10%, 50% of the
   rows): whether every query got exactly k answers, recall@10 against the
   exact neighbours among the matching rows (target: 0.95 at 1%), the time of
   the 1,000 filtered queries against the same queries unfiltered (target:
   at most 2x for 10% and more), and, for 1% and less, against searching
   everything for k / selectivity neighbours and filtering afterwards
   (target: faster), with that baseline's own recall.
2. Metadata: the time to record each file's metadata (header, EXIF, digest)
   against the whole ``build_index`` of a folder of JPEG photos (target: at
   most 5%), and the memory of ids and metadata per image.
3. The widening rule of a filtered IVF search (n_probe / share ** w), w = 1
   (the default) against w = 0.5, on this data and on a second set it was
   not chosen on: 300,000 rows of 2,000 overlapping 64-d Gaussian clusters,
   where IVF at its defaults is far from exact.

    python benchmarks/bench_filters.py                  # N = 1,000,000
    python benchmarks/bench_filters.py --n 100000 --algorithms flat,ivf
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import load_photos, random_resized_crop
from bench_search import N_QUERIES, gallery_path, make_data, read_rows

K = 10
FILTERS = {  # name -> (expression, expected share of the rows)
    "1%": ("folder == 'f07'", 0.01),
    "10%": ("folder < 'f10'", 0.10),
    "50%, a date range": ("day >= '2024-07-01'", 0.50),
}


def load_average():
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def metadata_index(n):
    """An ImageIndex over ``n`` placeholder paths with the synthetic columns, for ``select``."""
    from sklearn_imgretrieval import NearestImageRetriever, make_retrieval_pipeline
    from sklearn_imgretrieval.indexing import ImageIndex

    rng = np.random.default_rng(0)
    pipe = make_retrieval_pipeline(NearestImageRetriever(algorithm="flat")).fit(np.zeros((n, 1), np.float32))
    paths = [f"/photos/f{folder:02d}/{i}.jpg" for i, folder in enumerate(rng.integers(0, 100, n))]
    index = ImageIndex(pipe, paths, root="/photos", record_files=False)
    start = np.datetime64("2023-01-01")
    days = (start + rng.integers(0, 3 * 365, n).astype("timedelta64[D]")).astype(str).tolist()
    index.join_metadata({"path": paths, "day": days})
    return index


def timed(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def recall(found, truth):
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


def part_filters(n, algorithms, repeats):
    from sklearn_imgretrieval import NearestImageRetriever

    make_data([n])
    gallery = read_rows(n, 0, n)
    queries = np.load(gallery_path(n).parent / "search_queries.npy")
    index = metadata_index(n)
    masks = {name: index.select(expression) for name, (expression, _) in FILTERS.items()}
    exact = NearestImageRetriever(algorithm="flat")
    truths = {}
    for name, mask in masks.items():
        rows = np.flatnonzero(mask)
        found = exact.fit(gallery[rows]).kneighbors(queries, n_neighbors=K, return_distance=False)
        truths[name] = rows[found]
    print(f"\n1. Filtered search, N = {n:,}, {N_QUERIES:,} queries, k = {K} (load {load_average()})\n")
    print(
        "| algorithm | filter | rows matching | exactly k | recall@10 | filtered s | unfiltered s | ratio "
        "| search then filter s (recall) |\n|---|---|---|---|---|---|---|---|---|"
    )
    for algorithm in algorithms:
        retriever = NearestImageRetriever(algorithm=algorithm, random_state=0).fit(gallery)
        unfiltered, _ = timed(lambda: retriever.kneighbors(queries, n_neighbors=K), repeats)
        for name, mask in masks.items():
            seconds, (_, found) = timed(lambda: retriever.kneighbors(queries, n_neighbors=K, subset=mask), repeats)
            exactly_k = bool((found >= 0).all() and found.shape == (len(queries), K))
            post = "-"
            share = FILTERS[name][1]
            if share <= 0.01:
                wide = min(n, int(np.ceil(K / share)))

                def search_then_filter():
                    _, candidates = retriever.kneighbors(queries, n_neighbors=wide)
                    kept = [row[mask[row]][:K] for row in candidates]
                    return kept

                post_seconds, kept = timed(search_then_filter, repeats)
                post = f"{post_seconds:.2f} ({recall([np.asarray(k) for k in kept], truths[name]):.3f})"
            print(
                f"| {algorithm} | {name} | {mask.sum():,} | {'yes' if exactly_k else 'no'} "
                f"| {recall(found, truths[name]):.3f} | {seconds:.2f} | {unfiltered:.2f} "
                f"| {seconds / unfiltered:.2f}x | {post} |"
            )


def part_metadata(n_files):
    from sklearn_imgretrieval import (
        ImagePreprocessor,
        NearestImageRetriever,
        PretrainedCNNEmbedder,
        make_retrieval_pipeline,
    )
    from sklearn_imgretrieval.indexing import build_index
    from sklearn_imgretrieval.indexing._records import record_files

    rng = np.random.default_rng(1)
    photos = load_photos()
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for number in range(n_files):
            path = Path(folder) / f"{number % 10:02d}" / f"{number:05d}.jpg"
            path.parent.mkdir(exist_ok=True)
            random_resized_crop(photos[number % len(photos)], (0.5, 1.0), (640, 480), rng).save(path, quality=90)
            paths.append(str(path))
        pipeline = make_retrieval_pipeline(
            ImagePreprocessor(size=(224, 224)), PretrainedCNNEmbedder(), NearestImageRetriever(metric="cosine")
        )
        started = time.perf_counter()
        index = build_index(paths, pipeline, fit_sample=8, root=folder)
        build = time.perf_counter() - started
        recording, _ = timed(lambda: record_files(paths), 3)
    print(f"\n2. Metadata of {n_files} JPEG photos (640x480), Lite0 at 224x224 (load {load_average()})\n")
    print(f"build_index, metadata included: {build:.2f} s")
    print(f"recording the metadata alone (headers, EXIF, digest; median of 3): {recording:.3f} s")
    print(f"share of the build: {recording / build:.1%} (target at most 5%)")
    print(f"ids and metadata in memory: {index.metadata_nbytes / len(index):,.0f} bytes per image")


def mixture_data(n=300_000, n_queries=500):
    """The second data set of part 3: overlapping Gaussian clusters, hard for IVF."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2000, 64)).astype(np.float32) * 0.7
    gallery = centres[rng.integers(0, 2000, n)] + rng.normal(size=(n, 64)).astype(np.float32)
    queries = centres[rng.integers(0, 2000, n_queries)] + rng.normal(size=(n_queries, 64)).astype(np.float32)
    return gallery.astype(np.float32), queries.astype(np.float32)


def part_widening(n, repeats):
    from sklearn_imgretrieval import NearestImageRetriever
    from sklearn_imgretrieval.neighbors import _faiss

    make_data([n])
    fashion = read_rows(n, 0, n), np.load(gallery_path(n).parent / "search_queries.npy")
    print(f"\n3. Widening of a filtered IVF search, n_probe / share ** w (load {load_average()})\n")
    print(
        "| data | filter | w | recall@10 | filtered s | unfiltered s (recall) | ratio |\n|---|---|---|---|---|---|---|"
    )
    rng = np.random.default_rng(2)
    for data, (gallery, queries) in (
        (f"Fashion-MNIST PCA-128, {n:,}", fashion),
        ("mixture 64-d, 300,000", mixture_data()),
    ):
        exact = NearestImageRetriever(algorithm="flat").fit(gallery)
        retriever = NearestImageRetriever(algorithm="ivf", random_state=0).fit(gallery)
        unfiltered, (_, found) = timed(lambda: retriever.kneighbors(queries, n_neighbors=K), repeats)
        everything = recall(found, exact.kneighbors(queries, n_neighbors=K, return_distance=False))
        for share in (0.10, 0.50):
            mask = rng.random(len(gallery)) < share
            truth = exact.kneighbors(queries, n_neighbors=K, return_distance=False, subset=mask)
            for widening in (1.0, 0.5):
                _faiss._WIDENING = widening
                try:
                    seconds, (_, found) = timed(
                        lambda: retriever.kneighbors(queries, n_neighbors=K, subset=mask), repeats
                    )
                finally:
                    _faiss._WIDENING = 1.0
                print(
                    f"| {data} | {share:.0%} | {widening} | {recall(found, truth):.3f} | {seconds:.2f} "
                    f"| {unfiltered:.2f} ({everything:.3f}) | {seconds / unfiltered:.2f}x |"
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery rows (default: %(default)s)")
    parser.add_argument("--algorithms", default="flat,ivf,ivfpq,hnsw", help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median (default: %(default)s)")
    parser.add_argument("--files", type=int, default=512, help="photos of part 2 (default: %(default)s)")
    parser.add_argument("--parts", default="123", help="which parts to run (default: all)")
    args = parser.parse_args()
    print(f"$ python benchmarks/bench_filters.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load average at start: {load_average()}")
    if "1" in args.parts:
        part_filters(args.n, args.algorithms.split(","), args.repeats)
    if "2" in args.parts:
        part_metadata(args.files)
    if "3" in args.parts:
        part_widening(args.n, args.repeats)
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
