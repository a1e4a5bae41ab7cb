"""ShardedRetriever on a Dask LocalCluster: the same answers as one index, scaling, memory, near-duplicates.

The data are bench_search.py's recipe: Fashion-MNIST PCA-128 vectors of all
70,000 images, repeated with Gaussian jitter up to N rows, and 1,000 held-out
jittered queries (written once to benchmarks/out/). Every worker is a
process with one thread, and every FAISS search in it uses one thread; the
one index the shards are compared with runs in this process on one thread.
The gallery reaches the workers as a dask array read from the data file by
the workers themselves, never gathered here.

1. Same answers: one index against 4 shards on 2 workers, same algorithm
   and parameters: recall@10 against the exact neighbours (target: within
   0.005), and for ``flat`` the neighbours themselves.
2. Scaling: 2 shards on 1 worker against 2 shards on 2 workers: the build
   (training of the shared quantizer included) and 1,000 queries (targets:
   1.5x and 1.7x); and one shard on one worker against the same index in
   this process (target: within 1.2x).
3. Memory: each worker's peak against one process that builds and
   searches the whole index (target: at most 0.6x).
4. Near-duplicates: on N hashes and N embeddings with planted near-copies,
   the pairs found in 4 shards against those of one index (target: the same).
5. Sizing: bytes of index per image (``nbytes_``) of each algorithm at its
   defaults, for this recipe's 128 dimensions and for Lite0's 1,280, the
   figures docs/more-than-one-machine.md sizes a cluster with.

    python benchmarks/bench_sharded.py                    # N = 2,000,000; about half an hour
    python benchmarks/bench_sharded.py --n 200000 --quick # a smoke run
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
from _common import peak_rss_mb
from _common import run_worker as run_common_worker
from bench_search import DIMS, N_QUERIES, exact_truth, gallery_path, make_data, read_rows, recall_at_k

K = 10
BLOCK = 100_000  # rows a worker reads and adds at a time


def load_average():
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def lazy_gallery(n):
    """The gallery as a dask array whose blocks the workers read from the data file."""
    import dask
    import dask.array as da

    blocks = [
        da.from_delayed(
            dask.delayed(read_rows)(n, start, min(start + BLOCK, n)), (min(BLOCK, n - start), DIMS), np.float32
        )
        for start in range(0, n, BLOCK)
    ]
    return da.concatenate(blocks)


def one_index(algorithm, **params):
    from sklearn_imgretrieval import NearestImageRetriever

    return NearestImageRetriever(n_neighbors=K, algorithm=algorithm, n_jobs=1, random_state=0, **params)


def trained_like_the_shards(retriever, n, read):
    """One index trained as ShardedRetriever trains its shards' shared structure (the same sample of
    the same rows, random_state=0), then given every row a block at a time: what the shards are
    compared with. ``read(start, stop)`` gives rows."""
    retriever.set_params(**retriever.params_for_gallery(n))
    n_train = retriever.rows_to_train(n)
    if n_train > 1:
        sample = np.sort(np.random.RandomState(0).choice(n, n_train, replace=False))
        rows = np.concatenate([read(s, min(s + BLOCK, n))[sample[(sample >= s) & (sample < s + BLOCK)] - s]
                               for s in range(0, n, BLOCK)])  # fmt: skip
        retriever.fit(rows).remove(np.arange(n_train))
    for start in range(0, n, BLOCK):
        retriever.partial_fit(read(start, min(start + BLOCK, n)))
    return retriever


def timed(function, repeats=5):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def worker_peaks(client):
    return sorted(client.run(peak_rss_mb).values())


def _import_the_library():
    """What every process that searches pays before it holds any row: the library, FAISS, scikit-learn."""
    import faiss  # noqa: F401

    import sklearn_imgretrieval.neighbors  # noqa: F401

    return peak_rss_mb()


# ------------------------------------------------------------------ parts
def part_same_answers(n, queries, algorithms):
    from sklearn_imgretrieval import ShardedRetriever
    from sklearn_imgretrieval.indexing import dask_client

    truth = exact_truth(n, queries)
    print(f"\n1. Same answers, N = {n:,}: one index here against 4 shards on 2 workers (load {load_average()})\n")
    print("| algorithm | recall@10 one index | recall@10 4 shards | difference | same neighbours |")
    print("|---|---|---|---|---|")
    for algorithm in algorithms:
        one = trained_like_the_shards(one_index(algorithm), n, lambda a, b: read_rows(n, a, b))
        found_one = one.kneighbors(queries)
        del one
        with dask_client(n_workers=2) as client:
            sharded = ShardedRetriever(one_index(algorithm), n_shards=4, client=client, random_state=0)
            sharded.fit(lazy_gallery(n))
            found = sharded.kneighbors(queries)
        same = (
            "yes"
            if np.array_equal(found[1], found_one[1])
            else ("up to ties" if np.allclose(found[0], found_one[0], rtol=1e-5, atol=1e-6) else "no")
        )
        r_one, r_sharded = recall_at_k(found_one[1], truth), recall_at_k(found[1], truth)
        print(f"| {algorithm} | {r_one:.4f} | {r_sharded:.4f} | {r_sharded - r_one:+.4f} | {same} |")


def part_scaling(n, queries, algorithm, repeats):
    from sklearn_imgretrieval import ShardedRetriever
    from sklearn_imgretrieval.indexing import dask_client

    print(f"\n2. Scaling, N = {n:,}, {algorithm}, 2 shards, {N_QUERIES:,} queries (load {load_average()})\n")
    print("| workers | build s | queries s | queries/s |\n|---|---|---|---|")
    results = {}
    for n_workers in (1, 2):
        with dask_client(n_workers=n_workers) as client:
            retriever = one_index(algorithm).set_params(n_jobs=n_workers)  # training: the workers' threads
            sharded = ShardedRetriever(retriever, n_shards=2, client=client, random_state=0)
            started = time.perf_counter()
            sharded.fit(lazy_gallery(n))
            build = time.perf_counter() - started
            search, _ = timed(lambda: sharded.kneighbors(queries), repeats)
            results[n_workers] = (build, search)
            print(f"| {n_workers} | {build:.1f} | {search:.2f} | {N_QUERIES / search:,.0f} |")
    print(
        f"\n2 workers against 1: build {results[1][0] / results[2][0]:.2f}x (target 1.5x), "
        f"queries {results[1][1] / results[2][1]:.2f}x (target 1.7x)"
    )
    # one shard on one worker against the same index in this process
    with dask_client(n_workers=1) as client:
        sharded = ShardedRetriever(one_index(algorithm), n_shards=1, client=client, random_state=0)
        sharded.fit(lazy_gallery(n))
        remote, _ = timed(lambda: sharded.kneighbors(queries), repeats)
        local_retriever = sharded.shards_[0].call("state").result()  # the same index, copied here
    local, _ = timed(lambda: local_retriever.kneighbors(queries), repeats)
    print(
        f"one shard on one worker: {remote:.2f} s; the same index here: {local:.2f} s; "
        f"ratio {remote / local:.2f}x (target at most 1.2x)"
    )


def part_memory(n, algorithm):
    from sklearn_imgretrieval import ShardedRetriever
    from sklearn_imgretrieval.indexing import dask_client

    whole = run_common_worker(__file__, {"task": "whole", "n": n, "algorithm": algorithm})
    with dask_client(n_workers=2) as client:
        baseline = worker_peaks(client)
        imported = sorted(client.run(_import_the_library).values())
        sharded = ShardedRetriever(one_index(algorithm), n_shards=4, client=client, random_state=0)
        sharded.fit(lazy_gallery(n))
        sharded.kneighbors(np.load(gallery_path(n).parent / "search_queries.npy"))
        peaks = worker_peaks(client)
        nbytes = sharded.nbytes_
    print(f"\n3. Memory, N = {n:,}, {algorithm}: peak resident memory (MiB) (load {load_average()})\n")
    print(
        f"one process, whole index: {whole['peak_mb']:,.0f} (index {whole['nbytes'] / 2**20:,.0f} MiB, "
        f"{whole['imported_mb']:,.0f} after importing the library)"
    )
    for number, (start, loaded, peak) in enumerate(zip(baseline, imported, peaks)):
        print(
            f"worker {number}: {peak:,.0f} (idle {start:,.0f}, {loaded:,.0f} after importing the library); "
            f"ratio {peak / whole['peak_mb']:.2f}x (target <= 0.6x); above the imports: "
            f"{(peak - loaded) / (whole['peak_mb'] - whole['imported_mb']):.2f}x"
        )
    print(f"4 shards hold {nbytes / 2**20:,.0f} MiB of index in all")


def _whole_index(task):
    n = task["n"]
    imported = _import_the_library()
    one = trained_like_the_shards(one_index(task["algorithm"]), n, lambda a, b: read_rows(n, a, b))
    one.kneighbors(np.load(gallery_path(n).parent / "search_queries.npy"))
    return {"peak_mb": peak_rss_mb(), "nbytes": one.nbytes_, "imported_mb": imported}


def part_duplicates(n):
    from sklearn_imgretrieval import NearestImageRetriever, ShardedRetriever
    from sklearn_imgretrieval.duplicates import find_duplicates_in
    from sklearn_imgretrieval.indexing import dask_client

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    copies = rng.choice(n, n // 100, replace=False)
    codes[copies] = codes[rng.choice(n, len(copies))]  # planted duplicates, then 2 bits flipped
    codes[copies, 0] ^= 0b101
    embeddings = read_rows(n, 0, n) if gallery_path(n).exists() else rng.normal(size=(n, DIMS)).astype(np.float32)
    embeddings[copies] = embeddings[rng.choice(n, len(copies))] * 1.0001
    print(
        f"\n4. Near-duplicates, N = {n:,} ({len(copies):,} planted copies), 4 shards on 2 workers "
        f"(load {load_average()})\n"
    )
    print("| rows | metric, radius | pairs one index | pairs 4 shards | same pairs |\n|---|---|---|---|---|")
    for name, rows, metric, radius in (("hashes", codes, "hamming", 4), ("embeddings", embeddings, "euclidean", 0.5)):
        base = NearestImageRetriever(metric=metric, algorithm="ivf", n_jobs=1, random_state=0)
        one = find_duplicates_in(trained_like_the_shards(base, n, lambda a, b: rows[a:b]), radius)
        with dask_client(n_workers=2) as client:
            sharded = ShardedRetriever(
                NearestImageRetriever(metric=metric, algorithm="ivf", n_jobs=1, random_state=0),
                n_shards=4, client=client, random_state=0,
            ).fit(rows)  # fmt: skip
            found = find_duplicates_in(sharded, radius)
        same = {tuple(p) for p in one.pairs} == {tuple(p) for p in found.pairs}
        print(
            f"| {name} | {metric}, {radius} | {len(one.pairs):,} | {len(found.pairs):,} | {'yes' if same else 'no'} |"
        )


def part_sizing(n):
    rng = np.random.default_rng(0)
    print(f"\n5. Bytes of index per image, N = {n:,}, defaults (Gaussian rows)\n")
    print("| dimensions | flat | ivf | hnsw | ivfpq |\n|---|---|---|---|---|")
    for dims in (DIMS, 1280):
        rows = rng.standard_normal((n, dims), dtype=np.float32)
        sizes = [one_index(algorithm).fit(rows).nbytes_ / n for algorithm in ("flat", "ivf", "hnsw", "ivfpq")]
        print(f"| {dims:,} | " + " | ".join(f"{size:,.0f}" for size in sizes) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000, help="gallery rows (default: %(default)s)")
    parser.add_argument("--duplicates-n", type=int, default=1_000_000, help="rows of part 4 (default: %(default)s)")
    parser.add_argument("--algorithm", default="ivf", help="algorithm of parts 2 and 3 (default: %(default)s)")
    parser.add_argument("--parts", default="12345", help="which parts to run (default: all)")
    parser.add_argument("--sizing-n", type=int, default=100_000, help="rows of part 5 (default: %(default)s)")
    parser.add_argument(
        "--same-answers", default="flat,ivf,hnsw,ivfpq", help="algorithms of part 1 (default: %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="one repeat, parts at the given --n")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_whole_index(json.loads(args.worker))))
        return
    print(f"$ python benchmarks/bench_sharded.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load average at start: {load_average()}")
    make_data([args.n])
    queries = np.load(gallery_path(args.n).parent / "search_queries.npy")
    repeats = 1 if args.quick else 5
    if "1" in args.parts:
        part_same_answers(args.n, queries, args.same_answers.split(","))
    if "2" in args.parts:
        part_scaling(args.n, queries, args.algorithm, repeats)
    if "3" in args.parts:
        part_memory(args.n, args.algorithm)
    if "4" in args.parts:
        n = min(args.duplicates_n, args.n) if args.quick else args.duplicates_n
        make_data([n])
        part_duplicates(n)
    if "5" in args.parts:
        part_sizing(args.sizing_n)
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
