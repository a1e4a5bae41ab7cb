"""Finding duplicates: quality and speed of find_duplicates and ImageHasher.

Parts:

- ``quality``: a near-duplicate set built from the photos bundled with
  scikit-image and scikit-learn (20 originals, each with 6 copies: a crop of
  80-95% of the area, half size, JPEG quality 25, 5 degree rotation,
  horizontal mirror, brightness +30%) among 200 Fashion-MNIST distractors
  upscaled to 224x224; 420 true pairs. Precision, recall and F1 over pairs
  (and over the pairs the groups imply), recall per kind of copy, and
  seconds, for find_duplicates with every method and for the ``imagehash``
  package's hashes at the same thresholds (imagededup when installed).
- ``sweep``: F1 against max_distance for every method, and the CNN recipe
  at other input sizes: the figures behind the defaults.
- ``throughput``: ImageHasher against imagehash on 256x256 JPEG photos on
  one core (and at 1024x768).
- ``million``: 1,000,000 64-bit codes (10,000 planted near-duplicates
  among random codes) deduplicated by find_duplicates, in a fresh process:
  seconds and peak memory, exact and with the IVF index.

Run::

    python benchmarks/bench_dedup.py                       # quality, sweep, throughput (about 5 minutes)
    python benchmarks/bench_dedup.py --part million        # about 15 minutes on 2 cores
    python benchmarks/bench_dedup.py --part million --n-codes 100000   # a quick run
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from sklearn_imgretrieval import ImageHasher, _image_io, find_duplicates
from sklearn_imgretrieval.duplicates import check_duplicate_settings

#: scikit-image's bundled photos that load offline (``cat`` is ``chelsea`` again; of the
#: stereo pair only the left image), then scikit-learn's two sample images.
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "hubble_deep_field", "retina",
    "coins", "moon", "page", "text", "clock", "brick", "grass", "gravel", "colorwheel", "stereo_motorcycle",
)  # fmt: skip
COPIES = ("crop", "half", "jpeg25", "rotate5", "mirror", "bright")
HASHES = ("phash", "dhash", "ahash", "whash")


# ------------------------------------------------------------------- data set
def originals():
    """(name, RGB PIL image) of the 20 originals."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = []
    for name in SKIMAGE_PHOTOS:
        pixels = getattr(data, name)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels
        photos.append((name, Image.fromarray(pixels).convert("RGB")))
    samples = load_sample_images()
    photos += [(Path(f).stem, Image.fromarray(image)) for f, image in zip(samples.filenames, samples.images)]
    return photos


def make_copy(photo, kind, rng):
    if kind == "crop":  # 80-95% of the area, the aspect ratio kept, at a random place
        side = np.sqrt(rng.uniform(0.80, 0.95))
        w, h = round(photo.width * side), round(photo.height * side)
        left, top = rng.integers(0, photo.width - w + 1), rng.integers(0, photo.height - h + 1)
        return photo.crop((left, top, left + w, top + h))
    if kind == "half":
        return photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS)
    if kind == "rotate5":
        return photo.rotate(5, resample=Image.Resampling.BILINEAR)
    if kind == "mirror":
        return ImageOps.mirror(photo)
    if kind == "bright":
        return ImageEnhance.Brightness(photo).enhance(1.3)
    return photo  # jpeg25: the photo, saved at quality 25


def build_set(folder, n_distractors=200, seed=0):
    """Write the set as JPEG files; return (paths, group of each path: -1 for distractors, kind of each)."""
    from sklearn_imgretrieval.datasets import load_fashion_mnist

    rng = np.random.default_rng(seed)
    paths, groups, kinds = [], [], []
    for group, (name, photo) in enumerate(originals()):
        for kind in ("original", *COPIES):
            path = Path(folder) / f"{name}_{kind}.jpg"
            make_copy(photo, kind, rng).save(path, quality=25 if kind == "jpeg25" else 95)
            paths.append(str(path))
            groups.append(group)
            kinds.append(kind)
    images, _ = load_fashion_mnist("test")
    for index in rng.choice(len(images), n_distractors, replace=False):
        path = Path(folder) / f"fashion_{index:05d}.jpg"
        Image.fromarray(images[index]).resize((224, 224), Image.Resampling.BICUBIC).save(path, quality=95)
        paths.append(str(path))
        groups.append(-1)
        kinds.append("distractor")
    return paths, np.array(groups), np.array(kinds)


# ------------------------------------------------------------------- scoring
def true_pair_matrix(groups):
    return (groups[:, None] == groups[None, :]) & (groups[:, None] >= 0)


def score(pairs, groups, kinds):
    """Precision, recall, F1 over pairs, F1 over the pairs the groups imply, recall per kind of copy."""
    truth = true_pair_matrix(groups)
    n_true = int(np.triu(truth, 1).sum())
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    hits = truth[pairs[:, 0], pairs[:, 1]]
    precision = hits.mean() if len(pairs) else 1.0
    recall = hits.sum() / n_true
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    # pairs implied by the groups: every two members of a connected component
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(groups)
    _, labels = connected_components(coo_matrix((np.ones(len(pairs)), pairs.T), shape=(n, n)), directed=False)
    same = np.triu(labels[:, None] == labels[None, :], 1)
    group_precision = truth[same].mean() if same.any() else 1.0
    group_recall = (same & truth).sum() / n_true
    group_f1 = 2 * group_precision * group_recall / max(group_precision + group_recall, 1e-12)
    found = {tuple(p) for p in pairs.tolist()}
    per_kind = {}
    for kind in COPIES:
        copies = np.flatnonzero(kinds == kind)
        originals_ = copies - 1 - COPIES.index(kind)
        per_kind[kind] = np.mean([(int(o), int(c)) in found for o, c in zip(originals_, copies)])
    return precision, recall, f1, group_f1, per_kind


def hamming_pairs(codes, max_distance):
    """Every pair within ``max_distance`` bits, by brute force (the set is small)."""
    distances = np.unpackbits(codes[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2)
    i, j = np.nonzero(np.triu(distances <= max_distance, 1))
    return np.column_stack([i, j])


def cosine_pairs(embeddings, max_distance):
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    i, j = np.nonzero(np.triu(1 - unit @ unit.T <= max_distance, 1))
    return np.column_stack([i, j])


def imagehash_codes(paths, method):
    import imagehash

    function = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash}.get(
        method, imagehash.whash
    )
    codes = []
    for path in paths:
        with Image.open(path) as image:
            codes.append(np.packbits(function(image).hash.ravel()))
    return np.array(codes)


def imagededup_row(paths, method):
    """imagededup's own hashing, when it is installed."""
    from imagededup import methods

    hasher = getattr(methods, {"phash": "PHash", "dhash": "DHash", "ahash": "AHash", "whash": "WHash"}[method])()
    folder = str(Path(paths[0]).parent)
    index = {Path(p).name: i for i, p in enumerate(paths)}
    found = hasher.find_duplicates(image_dir=folder, max_distance_threshold=10)
    return np.array([(index[a], index[b]) for a, dups in found.items() for b in dups if index[a] < index[b]])


def table_row(name, setting, seconds, result):
    precision, recall, f1, group_f1, per_kind = result
    kinds = " | ".join(f"{per_kind[k]:.2f}" for k in COPIES)
    scores = f"{precision:.3f} | {recall:.3f} | {f1:.3f} | {group_f1:.3f}"
    return f"| {name} | {setting} | {scores} | {kinds} | {seconds:.1f} |"


def part_quality(paths, groups, kinds):
    print(f"## quality\n\n{len(paths)} images: {len(set(groups[groups >= 0]))} originals with {len(COPIES)} copies")
    print(f"each, {int((groups < 0).sum())} distractors; {int(np.triu(true_pair_matrix(groups), 1).sum())} true pairs")
    print("\nF1 over pairs found directly; 'groups F1' over every two images of one group.")
    print("Recall per kind of copy: the pair (original, copy) found.\n")
    header = "| method | max_distance | precision | recall | F1 | groups F1 | " + " | ".join(COPIES) + " | seconds |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = [
        ("find_duplicates() (cnn)", {}),
        ("find_duplicates(robust=True) (cnn)", {"robust": True}),
        *[(f"find_duplicates(method='{m}')", {"method": m}) for m in HASHES],
        ("find_duplicates(method='phash', robust=True)", {"method": "phash", "robust": True}),
    ]
    for name, options in rows:
        started = time.perf_counter()
        found = find_duplicates(paths, n_jobs=2, **options)
        seconds = time.perf_counter() - started
        if not options:
            default_found = found
        note = " (with importing TensorFlow)" if name.startswith("find_duplicates() ") else ""
        print(table_row(name + note, f"{found.max_distance:g}", seconds, score(found.pairs, groups, kinds)), flush=True)
    for method in HASHES:
        threshold = check_duplicate_settings(method).max_distance
        hasher = ImageHasher(method=method, jpeg_draft=False, n_jobs=2)
        started = time.perf_counter()
        found = find_duplicates(paths, method=hasher, max_distance=threshold)
        seconds = time.perf_counter() - started
        name = f"find_duplicates(method=ImageHasher('{method}', jpeg_draft=False))"
        print(table_row(name, f"{threshold:g}", seconds, score(found.pairs, groups, kinds)), flush=True)
    for method in HASHES:
        threshold = check_duplicate_settings(method).max_distance
        try:
            started = time.perf_counter()
            codes = imagehash_codes(paths, method)
            pairs = hamming_pairs(codes, threshold)
            seconds = time.perf_counter() - started
            print(table_row(f"imagehash {method}", f"{threshold:g}", seconds, score(pairs, groups, kinds)), flush=True)
        except ImportError:
            print(f"| imagehash {method} | not installed |")
    try:
        import imagededup  # noqa: F401
    except ImportError:
        imagededup_note = "imagededup is not installed (pip would bring a CUDA build of torch): no imagededup rows."
    else:
        imagededup_note = ""
        for method in ("phash", "dhash"):
            started = time.perf_counter()
            pairs = imagededup_row(paths, method)
            seconds = time.perf_counter() - started
            print(table_row(f"imagededup {method}", "10", seconds, score(pairs, groups, kinds)), flush=True)
    # imagededup's CNN recipe (resize to 256x256, centre crop 224, average pooling, cosine
    # similarity >= 0.9) with this library's EfficientNet-Lite0, written here
    from sklearn_imgretrieval import ImagePreprocessor, PretrainedCNNEmbedder

    started = time.perf_counter()
    images = ImagePreprocessor(size=(256, 256), color_mode="rgb", flatten=False, n_jobs=2).fit_transform(paths)
    embedder = PretrainedCNNEmbedder(input_size=224).fit(images[:1, 16:240, 16:240])
    embeddings = np.concatenate(
        [embedder.transform(images[s : s + 64, 16:240, 16:240]) for s in range(0, len(images), 64)]
    )
    found = find_duplicates(embeddings, method="precomputed", max_distance=0.1)
    seconds = time.perf_counter() - started
    name = "imagededup's CNN recipe on Lite0 (resize 256, crop 224, avg, cos >= 0.9)"
    print(table_row(name, "0.1", seconds, score(found.pairs, groups, kinds)), flush=True)
    truth = true_pair_matrix(groups)
    false = [(i, j) for i, j in default_found.pairs if not truth[i, j]]
    both_distractors = sum(groups[i] < 0 and groups[j] < 0 for i, j in false)
    print(f"\nfind_duplicates(): {len(false)} false pairs, {both_distractors} of them between two distractors.")
    if imagededup_note:
        print(imagededup_note)


def part_sweep(paths, groups, kinds):
    import sklearn_imgretrieval.duplicates as duplicates_module

    print("\n## sweep\n\nF1 over pairs against max_distance (the default in bold)\n")
    for method in HASHES:
        codes = ImageHasher(method=method, n_jobs=2).fit_transform(paths)
        default = check_duplicate_settings(method).max_distance
        cells = []
        for threshold in range(0, 17, 2):
            f1 = score(hamming_pairs(codes, threshold), groups, kinds)[2]
            cells.append(f"**{threshold}: {f1:.3f}**" if threshold == default else f"{threshold}: {f1:.3f}")
        print(f"- {method}: " + ", ".join(cells))
    print("\nThe CNN recipe (centred crop 87.5%, GeM pooling) at other input sizes; F1 at each cosine distance\n")
    thresholds = (0.08, 0.10, 0.12, 0.14, 0.15, 0.16, 0.18, 0.20)
    print("| input size | " + " | ".join(f"{t:.2f}" for t in thresholds) + " | seconds |")
    print("|---|" + "---|" * (len(thresholds) + 1))
    default_size = duplicates_module.CNN_INPUT_SIZE
    for size in (96, 128, 160, 224):
        duplicates_module.CNN_INPUT_SIZE = size
        started = time.perf_counter()
        embeddings, _ = duplicates_module._cnn_embed(paths, robust=False, batch_size=32, n_jobs=2)
        seconds = time.perf_counter() - started
        f1s = [score(cosine_pairs(embeddings, t), groups, kinds)[2] for t in thresholds]
        print(f"| {size} | " + " | ".join(f"{f:.3f}" for f in f1s) + f" | {seconds:.1f} |", flush=True)
    duplicates_module.CNN_INPUT_SIZE = default_size


# ----------------------------------------------------------------- throughput
def make_photos(folder, n, size, seed=0):
    """``n`` JPEG photos of ``size`` (W, H) cut from the bundled photos, quality 90."""
    from _common import load_photos, random_resized_crop

    rng = np.random.default_rng(seed)
    sources = load_photos()
    paths = []
    for i in range(n):
        path = Path(folder) / f"photo_{i:05d}.jpg"
        random_resized_crop(sources[i % len(sources)], (0.5, 1.0), size, rng).save(path, quality=90)
        paths.append(str(path))
    return paths


def part_throughput(folder, repeats):
    import imagehash

    print("\n## throughput\n")
    print(f"JPEG photos (quality 90) hashed one by one, the process pinned to one CPU, n_jobs=1; best of {repeats}")
    print("runs, alternated. img/s per CPU second (process time, which other processes on the machine do not")
    print("change) and, in brackets, per wall-clock second.\n")
    print("| photos | method | imagehash img/s | ImageHasher img/s | ratio | jpeg_draft=False img/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    cpus = os.sched_getaffinity(0)
    bounds = []
    for size, n in (((256, 256), 2000), ((1024, 768), 300)):
        (Path(folder) / f"{size[0]}").mkdir()
        paths = make_photos(Path(folder) / f"{size[0]}", n, size)
        for method, function in (("phash", imagehash.phash), ("dhash", imagehash.dhash)):

            def reference():
                for path in paths:
                    with Image.open(path) as image:
                        function(image)

            runs = {
                "imagehash": reference,
                "draft": lambda: ImageHasher(method=method, n_jobs=1).transform(paths),
                "full": lambda: ImageHasher(method=method, jpeg_draft=False, n_jobs=1).transform(paths),
            }
            cpu, wall = dict.fromkeys(runs, np.inf), dict.fromkeys(runs, np.inf)
            os.sched_setaffinity(0, {min(cpus)})
            for _ in range(repeats):
                for name, run in runs.items():
                    started_cpu, started = time.process_time(), time.perf_counter()
                    run()
                    cpu[name] = min(cpu[name], time.process_time() - started_cpu)
                    wall[name] = min(wall[name], time.perf_counter() - started)
            os.sched_setaffinity(0, cpus)

            if method == "phash":
                cpu_reference = cpu["imagehash"] / n  # seconds per image

            def rate(name):
                return f"{n / cpu[name]:.0f} ({n / wall[name]:.0f})"

            def ratio(name):
                return f"{cpu['imagehash'] / cpu[name]:.2f}x ({wall['imagehash'] / wall[name]:.2f}x)"

            print(
                f"| {size[0]}x{size[1]} | {method} | {rate('imagehash')} | {rate('draft')} | {ratio('draft')} | "
                f"{rate('full')} | {ratio('full')} |",
                flush=True,
            )

        # What no hasher of these files can beat: reading them and decoding at the scale ImageHasher
        # asks libjpeg for, as it does, nothing else (libjpeg still reads every coefficient of the file).
        assert _image_io.read_jpeg_gray(paths[0], (32, 32)) is not None, "the fast reader declined these files"

        def decode_only():
            for path in paths:
                _image_io.read_jpeg_gray(path, (32, 32))

        best = np.inf
        os.sched_setaffinity(0, {min(cpus)})
        for _ in range(repeats):
            started = time.process_time()
            decode_only()
            best = min(best, time.process_time() - started)
        os.sched_setaffinity(0, cpus)
        bounds.append(f"{size[0]}x{size[1]}: {n / best:.0f} img/s, {cpu_reference * n / best:.2f}x imagehash's pHash")
    print("\nReading and decoding the files as ImageHasher does (libjpeg-turbo through simplejpeg), and nothing")
    print("else, per CPU second (the speed no hasher reading them at that scale can pass):", "; ".join(bounds))


# -------------------------------------------------------------------- million
def planted_codes(n_codes, n_copies, seed=0):
    """Random 64-bit codes, the last ``n_copies`` of which copy an earlier one with 0-8 bits flipped."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n_codes, 8), dtype=np.uint8)
    sources = rng.choice(n_codes - n_copies, n_copies, replace=False)
    bits = np.unpackbits(codes[sources], axis=1)
    for row, n_flips in enumerate(rng.integers(0, 9, n_copies)):
        flip = rng.choice(64, n_flips, replace=False)
        bits[row, flip] ^= 1
    codes[n_codes - n_copies :] = np.packbits(bits, axis=1)
    return codes, np.column_stack([sources, np.arange(n_codes - n_copies, n_codes)])


def million_worker(n_codes, algorithm):
    """Run in a fresh process: one find_duplicates call, with its time and peak memory."""
    codes, planted = planted_codes(n_codes, n_codes // 100)
    started = time.perf_counter()
    found = find_duplicates(codes, method="precomputed", max_distance=10, algorithm=algorithm)
    seconds = time.perf_counter() - started
    found_pairs = {tuple(p) for p in found.pairs.tolist()}
    recall = np.mean([(min(a, b), max(a, b)) in found_pairs for a, b in planted.tolist()])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_mb,
                "pairs": len(found.pairs),
                "groups": len(found.groups),
                "recall": recall,
                "codes_mb": codes.nbytes / 2**20,
            }
        )
    )


def part_million(n_codes):
    print("\n## million\n")
    print(f"{n_codes:,} random 64-bit codes of which {n_codes // 100:,} copy an earlier code with 0-8 bits flipped;")
    print("find_duplicates(codes, method='precomputed', max_distance=10) in a fresh process each;")
    print("recall over the planted pairs. Peak memory is the process's (Python, NumPy, FAISS included).\n")
    print("| algorithm | seconds | peak memory MB | pairs found | groups | recall of planted pairs |")
    print("|---|---|---|---|---|---|")
    for algorithm in ("ivf", "auto"):
        done = subprocess.run(
            [sys.executable, __file__, "--million-worker", str(n_codes), algorithm],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        name = "auto (exact, FAISS binary flat)" if algorithm == "auto" else "ivf (approximate)"
        print(
            f"| {name} | {r['seconds']:.0f} | {r['peak_mb']:.0f} | {r['pairs']:,} | {r['groups']:,} | "
            f"{r['recall']:.4f} |",
            flush=True,
        )
    print(f"\nThe codes take {n_codes * 8 / 1e6:.0f} MB; an n x n float32 distance matrix would take")
    print(f"{n_codes**2 * 4 / 1e9:,.0f} GB.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("quality", "sweep", "throughput", "million", "all"), default=None)
    parser.add_argument("--n-codes", type=int, default=1_000_000, help="codes for --part million")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats for --part throughput")
    parser.add_argument("--million-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.million_worker:
        million_worker(int(args.million_worker[0]), args.million_worker[1])
        return
    parts = {"all": ("quality", "sweep", "throughput", "million"), None: ("quality", "sweep", "throughput")}.get(
        args.part, (args.part,)
    )
    command = "python benchmarks/bench_dedup.py" + (f" --part {args.part}" if args.part else "")
    if args.n_codes != 1_000_000:
        command += f" --n-codes {args.n_codes}"
    if args.repeats != 3:
        command += f" --repeats {args.repeats}"
    print(f"$ {command}\n")
    with tempfile.TemporaryDirectory() as folder:
        if {"quality", "sweep"} & set(parts):
            os.mkdir(Path(folder) / "set")
            paths, groups, kinds = build_set(Path(folder) / "set")
            if "quality" in parts:
                part_quality(paths, groups, kinds)
            if "sweep" in parts:
                part_sweep(paths, groups, kinds)
        if "throughput" in parts:
            part_throughput(folder, args.repeats)
    if "million" in parts:
        part_million(args.n_codes)


if __name__ == "__main__":
    main()
