"""Search at scale: NearestImageRetriever's exact and approximate backends against scikit-learn.

Part 1, exact search: Fashion-MNIST PCA-64 embeddings, 10,000 test queries
against the 60,000 training images, k = 10, median of 5 interleaved runs:
scikit-learn's brute force beside the retriever's default (algorithm="auto"),
for euclidean and cosine, and whether the neighbours agree.

Part 2, approximate search: Fashion-MNIST PCA-128 vectors of all 70,000
images, repeated with Gaussian jitter (sigma = 0.1 x each dimension's
standard deviation) up to N rows, and 1,000 held-out jittered queries.
For each N and algorithm, at the library's default parameters: build
seconds, query seconds (median of 3), recall@10 against exact search, index
bytes (serialize_index), peak RSS of the process, and speed-up over
scikit-learn's brute force measured in the same run. Every measurement runs
in its own fresh process, so that peak RSS is that algorithm's. Bare FAISS
calls written by hand with the same settings give the library's overhead.

Part 3 (--sweep): recall against queries per second while the search knob
(n_probe, ef_search) varies, as ann-benchmarks draws it.

Run::

    python benchmarks/bench_search.py                       # parts 1 and 2 at N = 100k, 300k, 1M
    python benchmarks/bench_search.py --sweep --n 1000000   # part 3, writes the plot
    python benchmarks/bench_search.py --n 10000000 --algorithms ivfpq --no-exact --no-brute --no-bare
    python benchmarks/bench_search.py --refine-ceiling --n 10000000   # what ivfpq's stored rows alone lose
    python benchmarks/bench_search.py --quick               # a smoke run in a minute

Data files go to benchmarks/out/ (about 4 bytes x 128 x N per N).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mb
from _common import run_worker as run_common_worker

OUT = Path(__file__).parent / "out"
DIMS = 128
K = 10
N_QUERIES = 1000
CHUNK = 1_000_000  # rows read or added at a time, so memory follows the index, not the data file


# ------------------------------------------------------------------ data
def fashion_pca(n_components):
    from sklearn.decomposition import PCA

    from sklearn_imgretrieval.datasets import load_fashion_mnist

    train, _ = load_fashion_mnist("train")
    test, _ = load_fashion_mnist("test")
    images = np.concatenate([train, test]).reshape(70_000, -1).astype(np.float32) / 255
    return PCA(n_components, random_state=0).fit_transform(images).astype(np.float32)


def gallery_path(n):
    return OUT / f"search_gallery_{n}.f32"


def make_data(ns):
    """Write the jittered galleries and the queries once; later runs reuse them."""
    OUT.mkdir(exist_ok=True)
    base_file, queries_file = OUT / "search_base.npy", OUT / "search_queries.npy"
    if not base_file.exists():
        np.save(base_file, fashion_pca(DIMS))
    base = np.load(base_file)
    sigma = (0.1 * base.std(axis=0)).astype(np.float32)
    if not queries_file.exists():
        rng = np.random.default_rng(12345)  # a different stream from the galleries': held out
        picks = rng.integers(0, len(base), N_QUERIES)
        np.save(queries_file, base[picks] + rng.normal(size=(N_QUERIES, DIMS)).astype(np.float32) * sigma)
    for n in ns:
        path = gallery_path(n)
        if path.exists() and path.stat().st_size == 4 * DIMS * n:
            continue
        rng = np.random.default_rng(0)
        with open(f"{path}.partial", "wb") as f:
            for start in range(0, n, CHUNK):
                rows = base[np.arange(start, min(start + CHUNK, n)) % len(base)]
                (rows + rng.normal(size=rows.shape).astype(np.float32) * sigma).tofile(f)
        os.replace(f"{path}.partial", path)


def read_rows(n, start, stop):
    with open(gallery_path(n), "rb") as f:
        return np.fromfile(f, dtype=np.float32, count=(stop - start) * DIMS, offset=4 * DIMS * start).reshape(-1, DIMS)


def exact_truth(n, queries, k=K):
    """The true k nearest rows of each query, by chunked float32 GEMM (any N, little memory)."""
    path = OUT / (f"search_truth_{n}.npy" if k == K else f"search_truth_{n}_{k}.npy")
    if path.exists():
        return np.load(path)
    best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    q_norms = (queries**2).sum(axis=1)[:, None]
    for start in range(0, n, CHUNK):
        rows = read_rows(n, start, min(start + CHUNK, n))
        d = q_norms + (rows**2).sum(axis=1)[None, :] - 2 * queries @ rows.T
        part = np.argpartition(d, k, axis=1)[:, :k]
        cand_d = np.concatenate([best_d, np.take_along_axis(d, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(cand_d, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(cand_d, order, axis=1), np.take_along_axis(cand_i, order, axis=1)
    np.save(path, best_i)
    return best_i


def recall_at_k(found, truth):
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


# --------------------------------------------------------------- workers
def _median_time(function, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def _bare_parameters(faiss, algorithm, settings):
    """FAISS's search parameters for a retriever's ``settings``, written by hand."""
    if algorithm == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=settings.ef_search)
    if algorithm == "ivf":
        return faiss.SearchParametersIVF(nprobe=settings.n_probe)
    if algorithm == "ivfpq":
        return faiss.IndexRefineSearchParameters(
            k_factor=settings.k_factor, base_index_params=faiss.SearchParametersIVF(nprobe=settings.n_probe)
        )
    return None


def _bare_faiss(algorithm, rows, refine):
    """The same index written by hand with FAISS at the library's defaults (``refine`` None: its
    default too), and its search parameters."""
    import faiss

    from sklearn_imgretrieval import NearestImageRetriever
    from sklearn_imgretrieval.neighbors._faiss import auto_n_cells, auto_pq_bits, auto_pq_m

    defaults = NearestImageRetriever()
    parameters = _bare_parameters(faiss, algorithm, defaults)
    refine = refine or defaults.refine
    d = rows.shape[1]
    if algorithm == "flat":
        return faiss.IndexFlatL2(d), parameters
    if algorithm == "hnsw":
        index = faiss.IndexHNSWFlat(d, defaults.hnsw_m)
        index.hnsw.efConstruction = defaults.ef_construction
        return index, parameters
    n_cells = auto_n_cells(len(rows))
    if algorithm == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, n_cells), parameters
    base = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, n_cells, auto_pq_m(d), auto_pq_bits(len(rows)))
    kinds = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}
    stored = faiss.IndexFlatL2(d) if refine == "flat" else faiss.IndexScalarQuantizer(d, kinds[refine])
    return faiss.IndexRefine(base, stored), parameters


def worker(task):
    """One measurement in this fresh process; prints a JSON line."""
    n, algorithm, repeats = task["n"], task["algorithm"], task["repeats"]
    library_index = None
    queries = np.load(OUT / "search_queries.npy")
    if algorithm == "sklearn-brute":
        from sklearn.neighbors import NearestNeighbors

        rows = read_rows(n, 0, n)
        started = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=K, algorithm="brute").fit(rows)
        build = time.perf_counter() - started
        query = _median_time(lambda: nn.kneighbors(queries), repeats)
        found = nn.kneighbors(queries, return_distance=False)
        size = rows.nbytes
    elif algorithm.startswith("bare-"):
        rows = read_rows(n, 0, n)
        index, params = _bare_faiss(algorithm[5:], rows, task["refine"])
        started = time.perf_counter()
        index.train(rows)
        index.add(rows)
        build = time.perf_counter() - started
        query = _median_time(lambda: index.search(queries, K, params=params), repeats)
        found = index.search(queries, K, params=params)[1]
        size = None
    else:
        import faiss

        from sklearn_imgretrieval import NearestImageRetriever

        retriever = NearestImageRetriever(n_neighbors=K, algorithm=algorithm, **task.get("params", {}))
        build = 0.0
        for start in range(0, n, CHUNK):  # fit, then partial_fit: the data never sits in memory whole
            rows = read_rows(n, start, min(start + CHUNK, n))
            started = time.perf_counter()  # the library's work, not the file's reading, as for bare FAISS
            retriever.partial_fit(rows)
            build += time.perf_counter() - started
            del rows  # before the next chunk is read, so that two never sit in memory together
        query = _median_time(lambda: retriever.kneighbors(queries), repeats)
        found = retriever.kneighbors(queries, return_distance=False)
        if task.get("sweep"):
            sweep = []
            for knob, values in task["sweep"].items():
                default = retriever.get_params()[knob]
                for value in values:
                    retriever.set_params(**{knob: value})
                    seconds = _median_time(lambda: retriever.kneighbors(queries), repeats)
                    found_v = retriever.kneighbors(queries, return_distance=False)
                    sweep.append({knob: value, "seconds": seconds, "found": found_v.tolist()})
                retriever.set_params(**{knob: default})  # one knob at a time, the others at their defaults
            task["sweep_result"] = sweep
        library_index = retriever.backend_._faiss_index
        if task.get("overhead"):
            # The library against a bare FAISS search of the very same index, alternated in
            # this process: what the library adds, without build or memory-layout differences.
            parameters = _bare_parameters(faiss, retriever.fit_algorithm_, retriever)
            times = {"library": [], "bare": []}
            for _ in range(max(repeats, 7)):
                for name, call in (
                    ("library", lambda: retriever.kneighbors(queries)),
                    ("bare", lambda: library_index.search(queries, K, params=parameters)),
                ):
                    started = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - started)
            task["overhead_result"] = {name: float(np.median(values)) for name, values in times.items()}
    # The peak of building and searching, read before serialize_index makes a copy of the whole
    # index to measure its size (at 10M rows that copy is 3 GB of its own).
    peak = peak_rss_mb()
    if library_index is not None:
        size = len(faiss.serialize_index(library_index))
    result = {
        "n": n,
        "algorithm": algorithm,
        "build_s": build,
        "query_s": query,
        "bytes": size,
        "peak_rss_mb": peak,
        "found": np.asarray(found).tolist(),
    }
    for key in ("sweep", "overhead"):
        if f"{key}_result" in task:
            result[key] = task[f"{key}_result"]
    print(json.dumps(result))


def run_worker(task):
    return run_common_worker(__file__, task)


# ----------------------------------------------------------------- parts
def part_exact(repeats):
    """Exact k-NN: scikit-learn brute against the retriever's default, both metrics."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    from sklearn_imgretrieval import NearestImageRetriever
    from sklearn_imgretrieval.datasets import load_fashion_mnist

    train, _ = load_fashion_mnist("train")
    test, _ = load_fashion_mnist("test")
    pca = PCA(64, random_state=0).fit(train.reshape(60_000, -1).astype(np.float32) / 255)
    gallery = pca.transform(train.reshape(60_000, -1).astype(np.float32) / 255).astype(np.float32)
    queries = pca.transform(test.reshape(10_000, -1).astype(np.float32) / 255).astype(np.float32)
    print("## Exact search: 10,000 queries x 60,000 gallery x 64-d (Fashion-MNIST PCA-64), k = 10\n")
    print(f"median of {repeats} interleaved runs\n")
    print(
        "| metric | scikit-learn brute s | NearestImageRetriever() s | speed-up "
        "| retriever's fastest-slowest run s | same neighbours | ties |"
    )
    print("|---|---|---|---|---|---|---|")
    seconds = {}
    for metric, n_jobs in (("euclidean", None), ("cosine", None), ("euclidean", 1), ("cosine", 1)):
        plain = NearestNeighbors(n_neighbors=K, algorithm="brute", metric=metric).fit(gallery)
        ours = NearestImageRetriever(n_neighbors=K, metric=metric, n_jobs=n_jobs).fit(gallery)
        times = {"plain": [], "ours": []}
        for _ in range(repeats):
            for name, model in (("plain", plain), ("ours", ours)):
                started = time.perf_counter()
                model.kneighbors(queries)
                times[name].append(time.perf_counter() - started)
        plain_s, ours_s = np.median(times["plain"]), np.median(times["ours"])
        seconds[metric, n_jobs] = ours_s
        ref_d, ref_i = plain.kneighbors(queries)
        our_d, our_i = ours.kneighbors(queries)
        same = (ref_i == our_i).all(axis=1)
        # a differing row is a tie when the distances still agree rank by rank ("ties": tied of differing)
        tied = np.isclose(ref_d[~same], our_d[~same], rtol=1e-5, atol=1e-6).all(axis=1)
        print(
            f"| {metric}{'' if n_jobs is None else f' (n_jobs={n_jobs})'} | {plain_s:.2f} | {ours_s:.2f} "
            f"| {plain_s / ours_s:.1f}x | {min(times['ours']):.2f}-{max(times['ours']):.2f} "
            f"| {same.mean():.4f} | {int(tied.sum())} of {int((~same).sum())} |"
        )
    ratio = seconds["cosine", None] / seconds["euclidean", None]
    print(f"\ncosine / euclidean time of NearestImageRetriever(): {ratio:.2f}\n")


def part_scale(ns, algorithms, repeats, refine, with_brute, with_bare):
    print("## Approximate search: Fashion-MNIST PCA-128 + jitter, 1,000 queries, k = 10, default parameters\n")
    queries = np.load(OUT / "search_queries.npy")
    print("| N | algorithm | build s | query s (median) | recall@10 | index MB | peak RSS MB | speed-up over brute |")
    print("|---|---|---|---|---|---|---|---|")
    overheads = []
    for n in ns:
        truth = exact_truth(n, queries)
        brute = run_worker({"n": n, "algorithm": "sklearn-brute", "repeats": repeats}) if with_brute else None
        if brute:
            print(
                f"| {n:,} | scikit-learn brute | {brute['build_s']:.2f} | {brute['query_s']:.3f} "
                f"| {recall_at_k(brute['found'], truth):.3f} | {brute['bytes'] / 1e6:.0f} "
                f"| {brute['peak_rss_mb']:.0f} | 1.0x |"
            )
        for algorithm in algorithms:
            params = {"refine": refine} if algorithm == "ivfpq" and refine else {}
            task = {"n": n, "algorithm": algorithm, "repeats": repeats, "params": params, "overhead": with_bare}
            result = run_worker(task)
            speedup = f"{brute['query_s'] / result['query_s']:.0f}x" if brute else "-"
            print(
                f"| {n:,} | {algorithm}{f' (refine={refine})' if params else ''} | {result['build_s']:.1f} "
                f"| {result['query_s']:.3f} | {recall_at_k(result['found'], truth):.3f} | {result['bytes'] / 1e6:.1f} "
                f"| {result['peak_rss_mb']:.0f} | {speedup} |",
                flush=True,
            )
            if with_bare:
                bare = run_worker({"n": n, "algorithm": f"bare-{algorithm}", "repeats": 1, "refine": refine})
                overheads.append((n, algorithm, result, bare, recall_at_k(bare["found"], truth)))
    if overheads:
        print("\n## The library against bare FAISS calls\n")
        print(
            "Query: the library's `kneighbors` and a bare `index.search` of the same FAISS index, "
            "alternated in one process (median of 7). Build: the same index written by hand, in its own process.\n"
        )
        print("| N | algorithm | library query s | bare query s | query ratio | build ratio | bare recall@10 |")
        print("|---|---|---|---|---|---|---|")
        for n, algorithm, ours, bare, bare_recall in overheads:
            library_s, bare_s = ours["overhead"]["library"], ours["overhead"]["bare"]
            print(
                f"| {n:,} | {algorithm} | {library_s:.3f} | {bare_s:.3f} | {library_s / bare_s:.2f} "
                f"| {ours['build_s'] / bare['build_s']:.2f} | {bare_recall:.3f} |"
            )


def part_refine_ceiling(n, k_factor):
    """Recall@10 when IVF-PQ's shortlist is perfect: the exact ``k_factor * 10`` nearest rows,
    re-ranked from the rows each ``refine`` keeps. What the stored rows alone lose."""
    import faiss

    queries = np.load(OUT / "search_queries.npy")
    truth = exact_truth(n, queries)
    shortlist = exact_truth(n, queries, K * k_factor)
    ids, position = np.unique(shortlist, return_inverse=True)
    position = position.reshape(shortlist.shape)
    rows = np.memmap(gallery_path(n), dtype=np.float32, mode="r").reshape(n, DIMS)[ids]
    first_fit = read_rows(n, 0, min(n, CHUNK))  # the library trains its refine rows on the first fit
    print(f"## Re-ranking a perfect shortlist, N = {n:,}: the exact {K * k_factor} nearest of each query\n")
    print("| refine | bytes per row | recall@10 |")
    print("|---|---|---|")
    print(f"| flat | {rows.itemsize * DIMS} | {_recall_reranked(rows, queries, shortlist, position, truth):.3f} |")
    for name, kind in (("fp16", faiss.ScalarQuantizer.QT_fp16), ("sq8", faiss.ScalarQuantizer.QT_8bit)):
        quantizer = faiss.ScalarQuantizer(DIMS, kind)
        quantizer.train(first_fit)
        stored = quantizer.decode(quantizer.compute_codes(rows))
        recall = _recall_reranked(stored, queries, shortlist, position, truth)
        print(f"| {name} | {quantizer.code_size} | {recall:.3f} |", flush=True)


def _recall_reranked(stored, queries, shortlist, position, truth):
    """Recall@10 of each query's shortlist ordered by its distance to the ``stored`` rows."""
    distances = ((stored[position] - queries[:, None, :]) ** 2).sum(axis=2)
    found = np.take_along_axis(shortlist, np.argsort(distances, axis=1, kind="stable")[:, :K], axis=1)
    return recall_at_k(found, truth)


SWEEP = {
    "ivf": {"n_probe": [1, 2, 4, 8, 16, 32, 64, 128]},
    "hnsw": {"ef_search": [8, 16, 32, 64, 128, 256]},
    "ivfpq": {"n_probe": [1, 2, 4, 8, 16, 32, 64], "k_factor": [1, 2, 4, 8, 16, 32]},
}


def part_sweep(n, algorithms, repeats, refine, with_exact, plot_path):
    queries = np.load(OUT / "search_queries.npy")
    truth = exact_truth(n, queries)
    print(f"## Recall against queries per second, N = {n:,}, 1,000 queries, k = 10\n")
    print("one knob at a time, the others at their defaults\n")
    print("| algorithm | setting | recall@10 | queries/s | peak RSS MB |")
    print("|---|---|---|---|---|")
    curves = {}
    exact = ("sklearn-brute", "flat") if with_exact else ()
    for name, algorithm in zip(("scikit-learn brute", "flat"), exact):
        point = run_worker({"n": n, "algorithm": algorithm, "repeats": repeats})
        qps = N_QUERIES / point["query_s"]
        curves[name] = [(recall_at_k(point["found"], truth), qps)]
        print(f"| {name} | exact | {curves[name][0][0]:.3f} | {qps:.0f} | {point['peak_rss_mb']:.0f} |")
    for algorithm in algorithms:
        if algorithm not in SWEEP:
            continue
        params = {"refine": refine} if algorithm == "ivfpq" and refine else {}
        task = {"n": n, "algorithm": algorithm, "repeats": repeats, "sweep": SWEEP[algorithm], "params": params}
        result = run_worker(task)
        name = f"{algorithm}{f' (refine={refine})' if params else ''}"
        for knob in SWEEP[algorithm]:
            curve = []
            for point in result["sweep"]:
                if knob not in point:
                    continue
                recall, qps = recall_at_k(point["found"], truth), N_QUERIES / point["seconds"]
                curve.append((recall, qps))
                print(
                    f"| {name} | {knob}={point[knob]} | {recall:.3f} | {qps:.0f} | {result['peak_rss_mb']:.0f} |",
                    flush=True,
                )
            curves[name if knob == next(iter(SWEEP[algorithm])) else f"{name}, {knob}"] = curve
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, curve in curves.items():
        recall, qps = zip(*curve)
        ax.plot(recall, qps, "o-" if len(curve) > 1 else "s", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (log)")
    ax.set_title(f"NearestImageRetriever, N = {n:,} x {DIMS}-d, 2 cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_path, dpi=110, bbox_inches="tight")
    print(f"\nwrote {plot_path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 300_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--algorithms", nargs="+", default=["flat", "ivf", "hnsw", "ivfpq"])
    parser.add_argument("--refine", choices=["flat", "fp16", "sq8"], help="ivfpq's refine (default: the library's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-exact", action="store_true", help="skip part 1")
    parser.add_argument(
        "--no-brute", action="store_true", help="skip scikit-learn brute in part 2 (and the exact rows of --sweep)"
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the hand-written FAISS comparison")
    parser.add_argument("--sweep", action="store_true", help="part 3 only: recall against speed at --n")
    parser.add_argument(
        "--refine-ceiling",
        action="store_true",
        help="only: recall@10 of each ivfpq refine when the shortlist is the exact nearest rows, at --n",
    )
    parser.add_argument(
        "--plot", type=Path, default=Path(__file__).parent.parent / "docs" / "images" / "recall_qps.png"
    )
    parser.add_argument("--quick", action="store_true", help="N = 20,000, one repeat: a smoke run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    ns = [20_000] if args.quick else args.n
    repeats = 1 if args.quick else args.repeats
    print(f"$ python benchmarks/bench_search.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load average at start: {os.getloadavg()[0]:.2f}\n")
    make_data(ns)
    if args.refine_ceiling:
        from sklearn_imgretrieval import NearestImageRetriever

        part_refine_ceiling(ns[-1], NearestImageRetriever().k_factor)
        return
    if args.sweep:
        part_sweep(ns[-1], args.algorithms, repeats, args.refine, not args.no_brute, args.plot)
        return
    if not args.no_exact:
        part_exact(1 if args.quick else 7)
    part_scale(ns, args.algorithms, repeats, args.refine, not args.no_brute, not args.no_bare)


if __name__ == "__main__":
    main()
