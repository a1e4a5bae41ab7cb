"""Latency of ``imgretrieval serve``: one client, then 20 at once, on a 10,000-image Lite0 index.

The collection (built once, cached under benchmarks/out/serve/): the 13
sample photos, each with 70 edited copies (crop, half size, JPEG quality 25,
5-degree rotation, mirror, brighter; scaled to a long side of 256-640
pixels, JPEG), and Fashion-MNIST training items as PNGs up to 10,000 files.
It is indexed by ``imgretrieval index FOLDER -o FILE`` with its defaults
(EfficientNet-Lite0 at 224x224, cosine, exact FAISS search, streamed in
chunks).

The server is started as a user starts it, ``imgretrieval serve INDEX
--port 0``, in a subprocess. Queries are 100 new edited copies of the sample
photos (not in the index), sent as JPEG uploads to ``POST /api/search?k=10``:

- single: after 5 unmeasured queries, 100 sequential queries, one at a time;
- concurrent: 20 client threads, each with its own connection, start together
  and send 10 queries each (200 requests); errors are answers other than 200,
  lost requests are those that got no answer at all.

Latency is measured by the client, from sending the request to the end of
the answer. Then, in this process, the same index's searcher is timed with
the embedder's own batch_size (32, as indexed) against batch_size=1 (what
the server sets), without HTTP, to show why the server sets it; and the
embedder alone at batches of 1 to 32 images, to show what answering
concurrent requests in one forward pass could gain.

Run (the timed part under the machine's benchmark lock, which other
benchmarks take too; making the files and the index needs no lock, and is
cached)::

    nice -n 19 python benchmarks/bench_serve.py --prepare
    flock /tmp/bench.lock python benchmarks/bench_serve.py
    flock /tmp/bench.lock python benchmarks/bench_serve.py --screenshot docs/images/serve.png
    python benchmarks/bench_serve.py --quick     # 1,000 images, 20 + 40 queries: a smoke run
"""

import argparse
import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

OUT = (Path(__file__).parent / "out" / "serve").resolve()
N_COPIES = 70  # edited copies of each sample photo in the collection
CHROMIUM = "/usr/bin/chromium"


# --------------------------------------------------------------- collection
def _scaled(image, rng):
    from PIL import Image

    side = int(rng.integers(256, 641))
    scale = side / max(image.size)
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
    )


def _edited_copies(n_per_photo, seed):
    """(photo name, edit, PIL image) of ``n_per_photo`` scaled edited copies of each sample photo."""
    from sklearn_imgretrieval.datasets import NEAR_DUPLICATE_EDITS, load_sample_photos, make_near_duplicates

    photos, names = load_sample_photos()
    rng = np.random.default_rng(seed)
    for photo, name in zip(photos, names):
        for number in range(n_per_photo):
            edit = NEAR_DUPLICATE_EDITS[number % len(NEAR_DUPLICATE_EDITS)]
            copy = make_near_duplicates([photo], edits=[edit], random_state=seed * 100_000 + number)[0][1]
            yield name, edit, _scaled(copy, rng)


def make_collection(folder, n_images):
    """Write the image files (once); return their folder."""
    from PIL import Image

    from sklearn_imgretrieval.datasets import load_fashion_mnist, load_sample_photos

    done = folder / "complete"
    if done.exists():
        return folder
    photos, names = load_sample_photos()
    for photo, name in zip(photos, names):
        (folder / name).mkdir(parents=True, exist_ok=True)
        photo.save(folder / name / f"{name}.jpg", quality=90)
    for number, (name, edit, copy) in enumerate(_edited_copies(N_COPIES, seed=1)):
        copy.save(folder / name / f"{name}_{number}_{edit}.jpg", quality=90)
    n_fashion = n_images - len(photos) * (N_COPIES + 1)
    items, labels = load_fashion_mnist("train")
    for number in range(n_fashion):
        (folder / f"fashion{labels[number]}").mkdir(exist_ok=True)
        Image.fromarray(items[number]).save(folder / f"fashion{labels[number]}" / f"{number}.png")
    done.write_text("ok")
    return folder


def build_index(folder, path):
    """``imgretrieval index FOLDER -o PATH`` with its defaults (Lite0 at 224, cosine); cached in ``path``."""
    if not path.exists():
        command = [sys.executable, "-m", "sklearn_imgretrieval", "index", str(folder), "-o", str(path)]
        print("$ imgretrieval index", folder, "-o", path, flush=True)
        subprocess.run(command, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return path


def make_queries(n_queries):
    """(photo name, JPEG bytes) of new edited copies, none of them in the collection."""
    queries = []
    for name, _, copy in _edited_copies(-(-n_queries // 13), seed=2):
        buffer = io.BytesIO()
        copy.save(buffer, format="JPEG", quality=90)
        queries.append((name, buffer.getvalue()))
    order = np.random.default_rng(0).permutation(len(queries))[:n_queries]
    return [queries[i] for i in order]


# ------------------------------------------------------------------- server
def start_server(index_path):
    """``imgretrieval serve INDEX --port 0`` in a subprocess: (process, url, seconds to the port, to ready)."""
    import httpx2

    started = time.perf_counter()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "sklearn_imgretrieval", "serve", str(index_path), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    match = re.search(r"at (http://\S+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    listening = time.perf_counter() - started
    while httpx2.get(f"{match.group(1)}/api/health").status_code != 200:
        time.sleep(0.05)
    return process, match.group(1), listening, time.perf_counter() - started


def search(client, url, data):
    """(seconds, status or exception name, top-1 label) of one upload."""
    started = time.perf_counter()
    try:
        response = client.post(f"{url}/api/search?k=10", files={"image": ("query.jpg", data, "image/jpeg")})
    except Exception as exc:  # no answer: the request is lost
        return time.perf_counter() - started, type(exc).__name__, None
    seconds = time.perf_counter() - started
    top = response.json()["neighbors"][0]["label"] if response.status_code == 200 else None
    return seconds, response.status_code, top


def run_single(url, queries, n_warm=5):
    import httpx2

    with httpx2.Client(timeout=60) as client:
        for _, data in queries[:n_warm]:
            search(client, url, data)
        return [(name, *search(client, url, data)) for name, data in queries]


def run_concurrent(url, queries, n_clients, per_client):
    import httpx2

    results = [[] for _ in range(n_clients)]
    barrier = threading.Barrier(n_clients)

    def client_thread(number):
        with httpx2.Client(timeout=120) as client:
            barrier.wait()
            for step in range(per_client):
                name, data = queries[(number * per_client + step) % len(queries)]
                results[number].append((name, *search(client, url, data)))

    threads = [threading.Thread(target=client_thread, args=(number,)) for number in range(n_clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [row for rows in results for row in rows], time.perf_counter() - started


def rss_megabytes(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024


def summary(name, rows, sent, wall=None):
    seconds = np.array([row[1] for row in rows if row[2] == 200]) * 1000
    errors = sum(1 for row in rows if row[2] != 200 and isinstance(row[2], int))
    lost = sent - sum(1 for row in rows if isinstance(row[2], int))
    correct = np.mean([row[3] == row[0] for row in rows if row[2] == 200])
    rate = f"{sent / wall:8.1f}" if wall else f"{'':>8}"
    return (
        f"{name:<26} {sent:>8} {np.percentile(seconds, 50):>8.0f} {np.percentile(seconds, 95):>8.0f} "
        f"{seconds.max():>8.0f} {rate} {errors:>6} {lost:>5} {correct:>9.0%}"
    )


# -------------------------------------------------------------- batch sizes
def time_batch_sizes(index_path, queries, n_queries=20):
    """Per-query seconds of the searcher, without HTTP, with the index's batch_size and with 1."""
    from PIL import Image

    from sklearn_imgretrieval.indexing import load_index
    from sklearn_imgretrieval.serve._searcher import IndexSearcher

    lines = []
    for batch_size in (None, 1):
        searcher = IndexSearcher(load_index(index_path), embed_batch_size=batch_size)
        images = [Image.open(io.BytesIO(data)) for _, data in queries[:n_queries]]
        searcher.warm_up()
        searcher.search_image(images[0], 10)
        timings = []
        for image in images:
            started = time.perf_counter()
            searcher.search_image(image, 10)
            timings.append(time.perf_counter() - started)
        shown = searcher.index.pipeline[1].batch_size
        lines.append(
            f"batch_size={shown:<3} median {np.median(timings) * 1000:7.0f} ms per query ({n_queries} queries)"
        )
    return lines


def time_embedder_batches(index_path, queries, batch_sizes=(1, 2, 4, 8, 16, 32), seconds=3.0):
    """Per-batch and per-image seconds of the index's embedder alone, at each batch size:
    what answering concurrent requests in one forward pass could gain."""
    from PIL import Image

    from sklearn_imgretrieval.indexing import load_index

    pipeline = load_index(index_path).pipeline
    rows = pipeline[0].transform([Image.open(io.BytesIO(data)) for _, data in queries[: max(batch_sizes)]])
    embedder, lines = pipeline[1], []
    for batch_size in batch_sizes:
        embedder.set_params(batch_size=batch_size)
        embedder.transform(rows[:batch_size])  # the first pass at a new size builds its function
        started, n_batches = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            embedder.transform(rows[:batch_size])
            n_batches += 1
        per_batch = (time.perf_counter() - started) / n_batches * 1000
        lines.append(f"batch of {batch_size:>2}: {per_batch:7.0f} ms, {per_batch / batch_size:5.0f} ms per image")
    return lines


# --------------------------------------------------------------- screenshot
def screenshot(url, path):
    """The page after a search by an edited copy of the cat photo, as Chromium draws it."""
    from playwright.sync_api import sync_playwright

    from sklearn_imgretrieval.datasets import load_sample_photos, make_near_duplicates

    photos, names = load_sample_photos()
    copy = make_near_duplicates([photos[names.index("chelsea")]], edits=["crop"], random_state=7)[0][1]
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=90)
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*args, "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url)
        page.get_by_text("Ready").wait_for(timeout=120_000)
        page.set_input_files(
            "#file", {"name": "chelsea-crop.jpg", "mimeType": "image/jpeg", "buffer": buffer.getvalue()}
        )
        page.locator("#results li").nth(9).wait_for(timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('#results img')].every((i) => i.naturalWidth > 0)")
        page.screenshot(path=path)
        browser.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images and fewer queries: a smoke run")
    parser.add_argument("--screenshot", metavar="PNG", help="also save the page after one search")
    parser.add_argument("--prepare", action="store_true", help="only make the image files and the index, then stop")
    args = parser.parse_args()
    n_images, n_single, per_client = (1_000, 20, 2) if args.quick else (10_000, 100, 10)
    n_clients = 20
    folder = make_collection(OUT / f"images{n_images}", n_images)
    index_path = build_index(folder, OUT / f"lite0-224-{n_images}.idx")
    if args.prepare:
        return
    queries = make_queries(max(n_single, n_clients * per_client))

    load_before = os.getloadavg()
    process, url, listening, ready = start_server(index_path)
    try:
        single = run_single(url, queries[:n_single])
        concurrent, wall = run_concurrent(url, queries, n_clients, per_client)
        rss = rss_megabytes(process.pid)
        if args.screenshot:
            screenshot(url, args.screenshot)
    finally:
        process.terminate()
        process.wait(timeout=60)
    load_after = os.getloadavg()

    command = "python benchmarks/bench_serve.py" + (" --quick" if args.quick else "")
    print(f"$ {command}")
    print(f"index: {n_images:,} images, Lite0 at 224x224, cosine, {index_path.stat().st_size / 2**20:.0f} MiB file")
    print(f"server: port open {listening:.1f} s after start, ready (network warm) {ready:.1f} s; RSS {rss:.0f} MB")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}, on {os.cpu_count()} cores")
    header = (
        f"{'run':<26} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'req/s':>8} "
        f"{'errors':>6} {'lost':>5} {'top-1 ok':>9}"
    )
    print(header)
    print("-" * len(header))
    print(summary("single client, sequential", single, len(single)))
    print(summary(f"{n_clients} concurrent clients", concurrent, n_clients * per_client, wall))
    print("top-1 ok: the nearest indexed image is the query's photo (its original or another edited copy)")
    print("searcher without HTTP, in this process:")
    for line in time_batch_sizes(index_path, queries):
        print(f"  {line}")
    print("the embedder alone, batches of images, in this process:")
    for line in time_embedder_batches(index_path, queries):
        print(f"  {line}")


if __name__ == "__main__":
    main()
