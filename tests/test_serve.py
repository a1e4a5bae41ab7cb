"""The web app (sklearn_imgretrieval.serve) through Starlette's TestClient, without a socket.

The index is the sample photos and distractors, searched by raw pixels at
32x32 (no network), so that every test runs in well under a second; the
embedder's thread-safety and start-up are checked with transformers that
record or hold their calls.
"""

import builtins
import concurrent.futures
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install -e '.[serve]'")
from starlette.testclient import TestClient

from sklearn_imgretrieval import (
    ImageHasher,
    ImagePreprocessor,
    NearestImageRetriever,
    make_retrieval_pipeline,
    save,
)
from sklearn_imgretrieval.datasets import load_sample_photos, make_near_duplicates
from sklearn_imgretrieval.indexing import ImageIndex
from sklearn_imgretrieval.serve import create_app
from sklearn_imgretrieval.serve._searcher import ServerStopping

LOCAL = "http://127.0.0.1"


CANNOT_BE_SHOWN = "This image cannot be shown."


def _jpeg(image, quality=90):
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The 13 sample photos (JPEG) and 8 distractors (PNG), in two class folders."""
    root = tmp_path_factory.mktemp("collection")
    paths, labels = [], []
    for label, kind, suffix in ((0, "photos", "jpg"), (1, "distractors", "png")):
        (root / kind).mkdir()
        images, names = load_sample_photos(kind)
        for image, name in zip(images, names):
            path = root / kind / f"{name}.{suffix}"
            image.save(path)
            paths.append(str(path))
            labels.append(label)
    return root, paths, np.array(labels)


def _index(collection, *middle_steps):
    root, paths, labels = collection
    pipe = make_retrieval_pipeline(
        ImagePreprocessor(size=(32, 32)), *middle_steps, NearestImageRetriever(n_neighbors=5, metric="cosine")
    ).fit(paths, labels)
    return ImageIndex(pipe, paths, root=root, labels=labels, class_names=["photos", "distractors"])


@pytest.fixture(scope="module")
def client(collection):
    with TestClient(create_app(_index(collection), max_upload_bytes=2**20), base_url=LOCAL) as client:
        _wait_until_ready(client)
        yield client


def _wait_until_ready(client, timeout=30):
    deadline = time.monotonic() + timeout
    while client.get("/api/health").status_code != 200:
        assert time.monotonic() < deadline, "the app did not finish its start-up"
        time.sleep(0.02)


def _upload(client, data, k=None, filename="query.jpg"):
    url = "/api/search" if k is None else f"/api/search?k={k}"
    return client.post(url, files={"image": (filename, data, "image/jpeg")})


# ------------------------------------------------------------------- search
@pytest.mark.parametrize("edit", ["jpeg_25", "brighter", "half_size"])
def test_search_by_upload_finds_the_original_of_an_edited_copy(client, collection, edit):
    _, paths, _ = collection
    photos, _ = load_sample_photos()
    for number in (1, 6, 11):
        copy = make_near_duplicates([photos[number]], edits=[edit])[0][1]
        response = _upload(client, _jpeg(copy), k=3)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["k"] == 3 and len(answer["neighbors"]) == 3
        assert answer["query"] == {"filename": "query.jpg", "width": copy.width, "height": copy.height}
        top = answer["neighbors"][0]
        assert top["path"] == paths[number] and top["id"] == number and top["label"] == "photos"
        assert top["thumbnail"] == f"/api/images/{number}/thumbnail"
        distances = [n["distance"] for n in answer["neighbors"]]
        assert distances == sorted(distances)


def test_k_defaults_and_is_capped_by_the_index_size(client, collection):
    data = _jpeg(load_sample_photos()[0][0])
    assert len(_upload(client, data).json()["neighbors"]) == 10
    assert len(_upload(client, data, k=100).json()["neighbors"]) == len(collection[1])


@pytest.mark.parametrize("k", ["0", "101", "-3", "ten", "2.5", "", "%C2%B2", "1e3", "9" * 40])
def test_a_k_that_means_nothing_gets_400(client, k):
    for response in (_upload(client, b"not read", k=k), client.get(f"/api/images/0/neighbors?k={k}")):
        assert response.status_code == 400
        assert "k must be a whole number from 1 to 100" in response.json()["error"]


def test_search_by_id_leaves_the_image_out(client, collection):
    _, paths, _ = collection
    answer = client.get("/api/images/14/neighbors?k=4").json()
    thumbnail = "/api/images/14/thumbnail"
    shown = {name: answer["query"][name] for name in ("id", "path", "label", "thumbnail")}
    assert shown == {"id": 14, "path": paths[14], "label": "distractors", "thumbnail": thumbnail}
    assert answer["query"]["folder"] == "distractors" and answer["query"]["width"] > 0  # the metadata too
    ids = [n["id"] for n in answer["neighbors"]]
    assert len(ids) == 4 and 14 not in ids
    # The same answer as the library gives, from the stored embeddings.
    distances, indices = client.app.state.searcher.index.kneighbors_of([14], n_neighbors=4)
    assert ids == indices[0].tolist()
    np.testing.assert_allclose([n["distance"] for n in answer["neighbors"]], distances[0])
    # k beyond the others in the index: all of them
    assert len(client.get("/api/images/14/neighbors?k=100").json()["neighbors"]) == len(paths) - 1


@pytest.mark.parametrize("image_id", [21, 22, 10**30])
def test_an_id_not_in_the_index_gets_404(client, image_id):
    response = client.get(f"/api/images/{image_id}/neighbors")
    assert response.status_code == 404 and response.json()["error"] == f"No image {image_id} in the index."
    response = client.get(f"/api/images/{image_id}/thumbnail")
    assert response.status_code == 404 and response.json()["error"] == CANNOT_BE_SHOWN


# --------------------------------------------------------------- thumbnails
def test_thumbnail_is_a_small_jpeg_made_once(client, collection):
    searcher = client.app.state.searcher
    before = searcher.thumbnail.cache_info()
    first = client.get("/api/images/3/thumbnail")
    second = client.get("/api/images/3/thumbnail")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content == second.content
    with Image.open(io.BytesIO(first.content)) as thumbnail, Image.open(collection[1][3]) as original:
        assert thumbnail.format == "JPEG"
        assert max(thumbnail.size) == 192 < max(original.size)
        assert thumbnail.width / thumbnail.height == pytest.approx(original.width / original.height, rel=0.02)
    after = searcher.thumbnail.cache_info()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 1


def test_thumbnail_cache_is_bounded(collection):
    app = create_app(_index(collection), thumbnail_cache_size=3)
    with TestClient(app, base_url=LOCAL) as client:
        for image_id in range(8):
            assert client.get(f"/api/images/{image_id}/thumbnail").status_code == 200
        assert app.state.searcher.thumbnail.cache_info().currsize == 3


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/../../../../etc/passwd",
        "/api/images/..%2f..%2f..%2fetc%2fpasswd/thumbnail",
        "/api/images/%2fetc%2fpasswd/thumbnail",
        "/api/images/-1/thumbnail",
        "/api/images/0x1/thumbnail",
        "/api/images/1.0/thumbnail",
        "/api/images/1/thumbnail/../../../../etc/passwd",
        "/api/images/1/thumbnail?path=/etc/passwd",
        "/api/thumbnail?path=/etc/passwd",
        "/static/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/images/1%00/thumbnail",
    ],
)
def test_no_path_from_the_client_is_ever_opened(client, collection, url, monkeypatch):
    opened = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    response = client.get(url)
    indexed = set(collection[1])
    assert [path for path in opened if path not in indexed] == []
    assert "root:" not in response.text
    if response.status_code == 200:  # only the query string was odd: the indexed image 1
        assert url.startswith("/api/images/1/thumbnail?") and opened in ([], [collection[1][1]])
    else:
        assert response.status_code == 404


def test_thumbnail_of_a_file_gone_since_indexing_gets_404(collection, tmp_path):
    kept, gone = tmp_path / "kept.png", tmp_path / "gone.png"
    Image.new("RGB", (40, 30), "red").save(kept)
    Image.new("RGB", (40, 30), "blue").save(gone)
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=(8, 8)), NearestImageRetriever(n_neighbors=1))
    index = ImageIndex(pipe.fit([kept, gone]), [kept, gone])
    gone.unlink()
    with TestClient(create_app(index), base_url=LOCAL) as client:
        assert client.get("/api/images/0/thumbnail").status_code == 200
        response = client.get("/api/images/1/thumbnail")
    assert response.status_code == 404 and response.json() == {"error": CANNOT_BE_SHOWN}


def test_an_index_from_someone_else_cannot_show_any_file_of_this_machine(tmp_path):
    """Thumbnails only of files whose content is what was indexed; one answer for every other."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, colour in (("shown.png", "red"), ("changed.png", "blue"), ("private.png", "green")):
        Image.new("RGB", (40, 30), colour).save(mine / name)
    (mine / "notes.png").write_text("a file named like an image")
    # The other person's index names files at the same paths, but indexed their own files there: a
    # different image at private.png, and files that do not exist here.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    Image.new("RGB", (40, 30), "yellow").save(theirs / "private.png")
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=(8, 8)), NearestImageRetriever(n_neighbors=1))
    index = ImageIndex(pipe.fit([mine / "shown.png", mine / "changed.png"]), [mine / "shown.png", mine / "changed.png"])
    foreign = ImageIndex(pipe.fit([theirs / "private.png"]), [theirs / "private.png"])
    foreign._table["path"] = type(foreign.paths).from_strings([str(mine / "private.png")])  # as a crafted file says
    Image.new("RGB", (40, 30), "white").save(mine / "changed.png")  # changed since it was indexed
    answers = []
    with TestClient(create_app(index), base_url=LOCAL) as client:
        assert client.get("/api/images/0/thumbnail").status_code == 200
        answers += [client.get(f"/api/images/{i}/thumbnail") for i in (1, 2, 99)]  # changed, no such ids
    with TestClient(create_app(foreign), base_url=LOCAL) as client:
        answers.append(client.get("/api/images/0/thumbnail"))  # a private file of this machine: never shown
    without_digests = ImageIndex(pipe.fit([mine / "shown.png"]), [mine / "shown.png"], record_files=False)
    with TestClient(create_app(without_digests), base_url=LOCAL) as client:
        answers.append(client.get("/api/images/0/thumbnail"))  # nothing recorded to compare with
    assert [(a.status_code, a.content) for a in answers] == [(404, answers[0].content)] * len(answers)
    assert answers[0].json() == {"error": CANNOT_BE_SHOWN}


def test_filters_in_every_search_and_hostile_ones_get_400(client, collection):
    _, paths, _ = collection
    with open(paths[3], "rb") as file:
        data = file.read()
    answer = client.post("/api/search?k=5&where=label%20%3D%3D%20'distractors'", files={"image": ("q.jpg", data)})
    assert answer.status_code == 200 and [n["label"] for n in answer.json()["neighbors"]] == ["distractors"] * 5
    answer = client.get("/api/images/3/neighbors", params={"k": 30, "where": "folder == 'photos' and width > 0"})
    found = answer.json()["neighbors"]
    assert len(found) == 12 and all(n["folder"] == "photos" for n in found)  # the 13 photos but itself
    groups = client.get("/api/duplicates", params={"max_distance": 2, "where": "folder == 'photos'"}).json()
    assert groups["where"] == "folder == 'photos'" and all(
        member["folder"] == "photos" for group in groups["groups"] for member in group
    )
    for hostile in (
        "__import__('os').system('touch /tmp/owned')",
        "label.__class__",
        "(lambda: 1)()",
        "[x for x in ()]",
        "colour == 'red'",
        "(" * 500 + "width > 1" + ")" * 500,
        " or ".join(["width > 9"] * 600),
    ):
        for response in (
            client.get("/api/images/3/neighbors", params={"where": hostile}),
            client.post("/api/search", params={"where": hostile}, files={"image": ("q.jpg", data)}),
            client.get("/api/duplicates", params={"max_distance": 0.1, "where": hostile}),
        ):
            assert response.status_code == 400, (hostile[:40], response.text)
            assert response.json()["error"].startswith("where is not a filter this index can use")


# ------------------------------------------------------------- bad uploads
def test_an_upload_over_the_limit_gets_413(client):
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")  # noise does not compress: 1.4 MiB
    data = buffer.getvalue()
    assert len(data) > 2**20
    response = _upload(client, data)
    assert response.status_code == 413
    assert response.json()["error"].startswith("The upload is larger than this server's limit of 1.0 MiB")


def test_the_limit_holds_while_the_body_arrives(collection):
    """A body without Content-Length is refused once the limit is passed, without reading the rest."""
    import anyio

    app = create_app(_index(collection), max_upload_bytes=10_000)
    chunks_read, sent = 0, []
    part_headers = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'

    async def receive():  # the part's headers, then 1000 chunks of 1 kB
        nonlocal chunks_read
        chunks_read += 1
        body = part_headers if chunks_read == 1 else b"x" * 1000
        return {"type": "http.request", "body": body, "more_body": chunks_read < 1001}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/search",
        "raw_path": b"/api/search",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"multipart/form-data; boundary=b")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    app.state.searcher.warm_up()
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert chunks_read == 11  # the headers and 9 kB pass, the 10th kB passes the limit: nothing more is read


def _truncated_jpeg():
    return _jpeg(load_sample_photos()[0][0])[:3000]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "the uploaded file is empty"),
        (b"just some text, not an image", "is not an image Pillow can read"),
        (b"%PDF-1.4\n" + bytes(500), "is not an image Pillow can read"),
        (_truncated_jpeg(), "the uploaded image cannot be decoded (OSError: image file is truncated"),
    ],
    ids=["empty", "text", "pdf", "truncated-jpeg"],
)
def test_a_file_that_is_not_a_usable_image_gets_400(client, data, reason):
    response = _upload(client, data)
    assert response.status_code == 400
    assert response.json()["error"].startswith("Not a usable image: ") and reason in response.json()["error"]
    # a message for a web user: one full stop, no advice meant for a batch of files
    error = response.json()["error"]
    assert error.endswith(".") and not error.endswith("..") and "Fix or drop" not in error and "\n" not in error


def test_an_image_that_cannot_be_decoded_says_what_to_send(client):
    error = _upload(client, _truncated_jpeg()).json()["error"]
    assert error.startswith("Not a usable image: the uploaded image cannot be decoded (OSError: image file is trunc")
    assert error.endswith("); it may be damaged or cut short: send the whole file again, or another copy of the image.")


def test_an_image_with_too_many_pixels_is_refused_before_decoding(collection):
    with TestClient(create_app(_index(collection), max_image_pixels=10_000), base_url=LOCAL) as client:
        _wait_until_ready(client)
        response = _upload(client, _jpeg(Image.new("RGB", (200, 100))))
    assert response.status_code == 400
    assert "has 200x100 pixels, more than the 10,000 this server decodes" in response.json()["error"]


@pytest.mark.parametrize(
    "request_kwargs, message",
    [
        ({"json": {"image": "cat.jpg"}}, "Send the image as multipart/form-data in a field named 'image'"),
        ({"files": {"picture": ("a.jpg", b"x")}}, "The request has no file in the field 'image'"),
        ({"data": {"image": "cat.jpg"}, "files": {"other": ("a.jpg", b"x")}}, "no file in the field 'image'"),
        ({"files": [("image", ("a.jpg", b"x")), ("image", ("b.jpg", b"y"))]}, "Too many files"),
    ],
    ids=["json", "other-field", "text-field", "two-files"],
)
def test_a_request_without_one_image_file_gets_400(client, request_kwargs, message):
    response = client.post("/api/search", **request_kwargs)
    assert response.status_code == 400 and message in response.json()["error"]


# ---------------------------------------------------------- start-up, threads
class Gate(TransformerMixin, BaseEstimator):
    """Passes rows through once ``opened`` is set: holds the app's warm-up as long as a test needs."""

    def __init__(self, opened=None):
        self.opened = opened

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        if not self.opened.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        return X


def test_requests_during_start_up_get_503_with_retry_after(collection):
    opened = threading.Event()
    opened.set()
    index = _index(collection, Gate(opened))
    opened.clear()  # the warm-up's forward pass now waits
    with TestClient(create_app(index), base_url=LOCAL) as client:
        response = _upload(client, _jpeg(load_sample_photos()[0][0]))
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert "starting" in response.json()["error"]
        health = client.get("/api/health")
        assert health.status_code == 503 and health.json() == {"status": "starting"}
        assert health.headers["retry-after"] == "2"
        # What needs no network answers meanwhile: the loop is not blocked by the warm-up.
        assert client.get("/").status_code == 200
        assert client.get("/api/index").json()["ready"] is False
        assert client.get("/api/images/0/neighbors?k=2").status_code == 200
        assert client.get("/api/images/0/thumbnail").status_code == 200
        opened.set()
        _wait_until_ready(client)
        assert _upload(client, _jpeg(load_sample_photos()[0][0]), k=1).json()["neighbors"][0]["id"] == 0


def test_shutdown_waits_for_the_forward_pass_in_progress(collection):
    """TensorFlow aborts the process if Python exits while it computes in a thread."""
    opened = threading.Event()
    opened.set()
    index = _index(collection, Gate(opened))
    opened.clear()
    app = create_app(index)
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/api/health").status_code == 503  # the warm-up waits at the gate
        threading.Timer(0.5, opened.set).start()
        stopping = time.monotonic()
    assert time.monotonic() - stopping >= 0.45 and app.state.searcher.ready
    with pytest.raises(ServerStopping, match="the server is stopping"):
        app.state.searcher.search_image(Image.new("RGB", (8, 8)), 1)


def test_a_failed_warm_up_is_reported_by_each_search(collection):
    opened = threading.Event()
    opened.set()
    index = _index(collection, Gate(opened))
    index.pipeline[1].opened = None  # transform now raises AttributeError
    with TestClient(create_app(index), base_url=LOCAL) as client:
        deadline = time.monotonic() + 30
        while (health := client.get("/api/health")).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert health.status_code == 500 and health.json()["status"] == "failed"
        response = _upload(client, b"x")
    assert response.status_code == 500
    assert response.json()["error"].startswith("The network failed to start: AttributeError")


class ConcurrencyRecorder(TransformerMixin, BaseEstimator):
    """Records how many calls run at once (the app must make it one) and takes 10 ms each."""

    def fit(self, X, y=None):
        self.running_, self.most_running_, self.lock_ = 0, 0, threading.Lock()
        return self

    def transform(self, X):
        with self.lock_:
            self.running_ += 1
            self.most_running_ = max(self.most_running_, self.running_)
        time.sleep(0.01)
        with self.lock_:
            self.running_ -= 1
        return X


def test_twenty_concurrent_searches_are_all_answered_one_forward_pass_at_a_time(collection):
    index = _index(collection, ConcurrencyRecorder())
    photos, _ = load_sample_photos()
    queries = [(number % 13, _jpeg(photos[number % 13], quality=60)) for number in range(20)]
    with TestClient(create_app(index, n_threads=4), base_url=LOCAL) as client:
        _wait_until_ready(client)
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(lambda query: _upload(client, query[1], k=1), queries))
    assert [r.status_code for r in responses] == [200] * 20
    assert [r.json()["neighbors"][0]["id"] for r in responses] == [number for number, _ in queries]
    assert index.pipeline[1].most_running_ == 1


# --------------------------------------------------------------- duplicates
def test_duplicate_groups_come_from_the_stored_embeddings(collection, tmp_path):
    paths = collection[1][:13]  # the photos (some distractors are near-uniform, close in pixels)
    copy = tmp_path / "copy_of_1.jpg"
    copy.write_bytes(_jpeg(Image.open(paths[1]), quality=25))
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=(32, 32)), NearestImageRetriever(metric="cosine"))
    index = ImageIndex(pipe.fit([*paths, str(copy)]), [*paths, str(copy)])
    with TestClient(create_app(index), base_url=LOCAL) as client:
        answer = client.get("/api/duplicates?max_distance=0.01").json()
        assert answer["max_distance"] == 0.01 and answer["k"] is None
        [group] = answer["groups"]
        assert [member["id"] for member in group] == [1, len(paths)]
        assert group[1]["path"] == str(copy) and 0 <= group[0]["distance"] == group[1]["distance"] <= 0.01
        assert client.get("/api/duplicates?max_distance=0").json()["groups"] == []
        for text in ("", "-1", "inf", "nan", "near"):
            response = client.get(f"/api/duplicates?max_distance={text}")
            assert response.status_code == 400 and "max_distance must be a number" in response.json()["error"]
        assert client.get("/api/duplicates").status_code == 400


@pytest.mark.parametrize(
    "retriever, hasher, bad, allowed",
    [
        (NearestImageRetriever(metric="cosine"), False, ["1e308", "2.5", "inf"], "from 0 to 2, in the cosine distance"),
        (
            NearestImageRetriever(metric="hamming"),
            True,
            ["65", "1e308"],
            "from 0 to 64, in differing bits of the 64-bit codes",
        ),
        (NearestImageRetriever(), False, ["inf", "-1e-9", "nan"], "of at least 0, in the euclidean distance"),
    ],
    ids=["cosine", "hamming", "euclidean"],
)
def test_a_max_distance_out_of_the_metrics_range_is_a_json_400_naming_the_range(
    collection, retriever, hasher, bad, allowed
):
    # max_distance=1e308 on a cosine index was a 500 "Internal Server Error" with a traceback.
    steps = [ImagePreprocessor(size=(32, 32)), *([ImageHasher()] if hasher else []), retriever]
    paths = collection[1][:6]
    index = ImageIndex(make_retrieval_pipeline(*steps).fit(paths), paths)
    with TestClient(create_app(index), base_url=LOCAL) as client:
        for text in bad:
            response = client.get(f"/api/duplicates?max_distance={text}")
            assert response.status_code == 400, response.text
            assert response.json()["error"] == f"max_distance must be a number {allowed}; got {text!r}."
        assert client.get("/api/duplicates?max_distance=0").status_code == 200
        missing = client.get("/api/duplicates")  # no default measured for these indexes
        assert missing.status_code == 400 and missing.json()["error"].startswith(
            f"Give max_distance, a number {allowed}"
        )


@pytest.mark.network
def test_duplicates_of_a_lite0_index_default_to_the_documented_0_15(collection):
    from sklearn_imgretrieval import PretrainedCNNEmbedder

    paths = collection[1][:4]
    steps = [ImagePreprocessor(size=(64, 64), color_mode="rgb"), PretrainedCNNEmbedder()]
    index = ImageIndex(make_retrieval_pipeline(*steps, NearestImageRetriever(metric="cosine")).fit(paths), paths)
    with TestClient(create_app(index), base_url=LOCAL) as client:
        answer = client.get("/api/duplicates").json()
        assert answer["max_distance"] == 0.15 and answer["groups"] == []  # four different photos
        response = client.get("/api/duplicates?max_distance=3")
        assert response.status_code == 400 and response.json()["error"].endswith("The default for this index is 0.15.")


def test_an_unexpected_failure_is_a_json_500_without_the_traceback(collection):
    app = create_app(_index(collection))

    def broken(*args):
        raise RuntimeError("a bug, with /home/me/secret/path in its message")

    app.state.searcher.duplicate_groups = broken
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as client:
        response = client.get("/api/duplicates?max_distance=0.1")
    assert response.status_code == 500
    assert response.json() == {"error": "The server failed to answer this request; its log says why."}


# ------------------------------------------------------- page, index, hosts
def test_index_statistics(client):
    stats = client.get("/api/index").json()
    assert stats["size"] == 21 and stats["classes"] == ["photos", "distractors"]
    assert stats["metric"] == "cosine" and stats["algorithm"] == "flat"
    assert stats["image_size"] == [32, 32] and stats["dimensions"] == 32 * 32 * 3
    assert stats["steps"] == ["ImagePreprocessor", "NearestImageRetriever"] and stats["ready"] is True


def test_the_app_describes_every_endpoint(client):
    description = client.get("/api").json()
    paths = {(e["path"], tuple(e["methods"])) for e in description["endpoints"]}
    assert paths == {
        ("/", ("GET",)),
        ("/api", ("GET",)),
        ("/api/health", ("GET",)),
        ("/api/index", ("GET",)),
        ("/api/search", ("POST",)),
        ("/api/images/{image_id}/neighbors", ("GET",)),
        ("/api/images/{image_id}/thumbnail", ("GET",)),
        ("/api/duplicates", ("GET",)),
    }
    assert all(len(e["description"]) > 20 for e in description["endpoints"])
    assert description["upload_field"] == "image"


def test_the_page_allows_only_its_own_script_and_style(client):
    import base64
    import hashlib
    import re

    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for needed in ('<input id="file"', 'type="file"', '<label for="k">', '<select id="k">', 'role="alert"'):
        assert needed in page
    policy = response.headers["content-security-policy"]
    for tag in ("script", "style"):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "http" not in policy  # nothing fetched from elsewhere


def test_other_host_names_are_refused(client):
    assert client.get("/api/index", headers={"host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/index", headers={"host": "localhost:8000"}).status_code == 200


def test_unknown_paths_and_methods_answer_in_json(client):
    assert client.get("/api/nothing").json() == {"error": "Not Found"}
    response = client.get("/api/search")
    assert response.status_code == 405 and response.json() == {"error": "Method Not Allowed"}


# ------------------------------------------------------- files and options
def test_an_index_file_is_read_and_never_written(collection, tmp_path):
    path = tmp_path / "photos.idx"
    save(_index(collection), path)
    path.chmod(0o444)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with TestClient(create_app(path), base_url=LOCAL) as client:
        _wait_until_ready(client)
        assert client.get("/api/index").json()["size"] == 21
        assert _upload(client, _jpeg(load_sample_photos()[0][2]), k=1).json()["neighbors"][0]["id"] == 2
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.idx"]


def test_bad_options_and_pipelines_are_refused(collection):
    index = _index(collection)
    with pytest.raises(ValueError, match=r"default_k \(20\) cannot be more than max_k \(10\)"):
        create_app(index, default_k=20, max_k=10)
    with pytest.raises(ValueError, match="max_upload_bytes must be a positive integer, got 0"):
        create_app(index, max_upload_bytes=0)
    rows = np.random.default_rng(0).random((4, 12), dtype=np.float32)
    arrays_only = ImageIndex(make_retrieval_pipeline(NearestImageRetriever()).fit(rows), list("abcd"))
    with pytest.raises(ValueError, match="must start with an ImagePreprocessor"):
        create_app(arrays_only)
    with pytest.raises(ValueError, match="is a pickle"):
        import joblib

        joblib.dump({"not": "an index"}, collection[0] / "old.idx")
        create_app(collection[0] / "old.idx")


def test_the_embedder_serves_one_image_per_forward_pass(collection):
    """A Keras embedder pads each batch to batch_size: the app sets it to 1 in memory."""
    from sklearn.decomposition import PCA

    class Batched(PCA):
        def __init__(self, n_components=4, batch_size=32):
            super().__init__(n_components=n_components)
            self.batch_size = batch_size

    index = _index(collection, Batched())
    create_app(index)
    assert index.pipeline[1].batch_size == 1
    assert index.pipeline[0].n_jobs == 1
    index = _index(collection, Batched())
    create_app(index, embed_batch_size=None)
    assert index.pipeline[1].batch_size == 32


def test_a_missing_web_stack_is_named_with_the_install_command(monkeypatch):
    import importlib
    import sys

    for name in [name for name in sys.modules if name.startswith("sklearn_imgretrieval.serve")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    with pytest.raises(ImportError, match=r"starlette is missing\): pip install \"sklearn-imgretrieval\[serve\]\""):
        importlib.import_module("sklearn_imgretrieval.serve")
