"""The web page of ``imgretrieval serve`` in a real browser: Debian's Chromium driven by Playwright.

The server runs as a user starts it, in a subprocess on a free port, over an
index of the sample photos and distractors searched by raw pixels (it starts
in seconds, with no network). The browser is the distribution's
(/usr/bin/chromium), never one Playwright downloads.
"""

import base64
import io
import os
import re
import subprocess
import sys

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.network,  # a served index with a network, driven in Chromium
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does) to test the web page",
    ),
]
# Offline and quiet: no updates, sync, or first-run pages; the sandbox needs privileges a container lacks.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URL of ``imgretrieval serve`` over the sample photos (folder "photos") and distractors."""
    from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline, save
    from sklearn_imgretrieval.datasets import load_sample_photos
    from sklearn_imgretrieval.indexing import ImageIndex

    root = tmp_path_factory.mktemp("collection")
    paths, labels = [], []
    for label, kind in enumerate(("photos", "distractors")):
        (root / kind).mkdir()
        for image, name in zip(*load_sample_photos(kind)):
            paths.append(root / kind / f"{name}.jpg")
            image.save(paths[-1], quality=90)
            labels.append(label)
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=(32, 32)), NearestImageRetriever(metric="cosine"))
    index_file = root / "photos.idx"
    index = ImageIndex(pipe.fit(paths), paths, root=root, labels=labels, class_names=["photos", "distractors"])
    save(index, index_file)
    process = subprocess.Popen(
        [sys.executable, "-m", "sklearn_imgretrieval", "serve", str(index_file), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        assert match, f"the server did not start: {line!r}"
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _edited_copy(name, edit):
    """JPEG bytes of an edited copy of a sample photo."""
    from sklearn_imgretrieval.datasets import load_sample_photos, make_near_duplicates

    images, names = load_sample_photos()
    copy = make_near_duplicates([images[names.index(name)]], edits=[edit])[0][1]
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG")
    return buffer.getvalue()


ALL_THUMBNAILS_LOADED = """() => {
  const images = [...document.querySelectorAll('#results img')];
  return images.length > 0 && images.every((image) => image.complete && image.naturalWidth > 0);
}"""


def _names(page):
    return page.locator("#results .name").all_inner_texts()


def _pick(page, photo, edit, n_results=10):
    """Choose an edited copy of a sample photo in the file picker; wait for its results."""
    upload = {"name": f"{photo}-{edit}.jpg", "mimeType": "image/jpeg", "buffer": _edited_copy(photo, edit)}
    page.set_input_files("#file", upload)
    page.locator("#results li").nth(n_results - 1).wait_for()


def test_upload_finds_the_original_and_a_neighbour_searches_from_itself(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("response", lambda response: response.status >= 400 and errors.append(f"{response.status} {response.url}"))
    page.goto(server)
    page.get_by_text("Ready: drop, paste or choose an image.").wait_for()
    assert "21 images" in page.locator("#index-info").inner_text()

    # The picker: a half-size copy of the cat photo finds the original first.
    _pick(page, "chelsea", "half_size")
    assert _names(page)[0] == "1. chelsea.jpg" and len(_names(page)) == 10
    assert "photos" in page.locator("#results .meta").first.inner_text()
    page.wait_for_function(ALL_THUMBNAILS_LOADED, timeout=10_000)
    assert page.eval_on_selector("#query-image", "image => image.complete && image.naturalWidth > 0")
    page.screenshot(path=tmp_path / "serve.png", full_page=True)

    # k is selectable: the same query again with 5 neighbours.
    page.select_option("#k", "5")
    page.wait_for_function("() => document.querySelectorAll('#results li').length === 5")
    assert _names(page)[0] == "1. chelsea.jpg"

    # A click on a neighbour searches from it: its own neighbours, itself left out.
    second = _names(page)[1].split(". ", 1)[1]
    page.locator("#results .tile").nth(1).click()
    page.wait_for_function(
        f"() => document.querySelector('#query-caption').textContent.includes({second!r})", timeout=10_000
    )
    assert f"{second}" not in [name.split(". ", 1)[1] for name in _names(page)]
    page.wait_for_function(ALL_THUMBNAILS_LOADED, timeout=10_000)
    assert errors == []


def test_filters_narrow_the_answers_and_live_in_the_address(server, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server)
    page.get_by_text("Ready: drop, paste or choose an image.").wait_for()
    page.fill("#f-folder", "distractors")
    page.click("#filters button[type=submit]")
    _pick(page, "chelsea", "half_size", n_results=8)  # 8 distractors match: all of them, nothing else
    page.wait_for_function("() => document.querySelectorAll('#results li').length === 8")
    assert all("distractors" in meta for meta in page.locator("#results .meta").all_inner_texts())
    assert "matching the filters" in page.locator("#status").inner_text()
    # a search from an indexed image puts its id and the filter in the address: reloading it gives the same
    chosen = _names(page)[0].split(". ", 1)[1]
    page.locator("#results .tile").first.click()
    page.wait_for_function(f"() => document.querySelector('#query-caption').textContent.includes({chosen!r})")
    page.wait_for_function("() => document.querySelectorAll('#results li').length === 7")
    shared = page.url
    assert "id=" in shared
    assert "folder=distractors" in shared
    before = _names(page)
    other = browser.new_page()
    other.goto(shared)
    other.wait_for_function(f"() => document.querySelector('#query-caption').textContent.includes({chosen!r})")
    other.wait_for_function("() => document.querySelectorAll('#results li').length === 7")
    assert _names(other) == before and other.input_value("#f-folder") == "distractors"
    # a condition the server cannot parse is an error message, not a page failure
    other.fill("#f-where", "__import__('os')")
    other.click("#filters button[type=submit]")
    other.locator("#error").get_by_text("function calls are not allowed").wait_for()
    assert errors == []


def test_drop_and_errors(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.get_by_text("Ready").wait_for()
    # Drag and drop: a drop event carrying a brighter copy of the coffee photo.
    data = base64.b64encode(_edited_copy("coffee", "brighter")).decode()
    transfer = page.evaluate_handle(
        """(data) => {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], 'coffee-brighter.jpg', { type: 'image/jpeg' }));
          return transfer;
        }""",
        data,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    page.wait_for_function("() => document.querySelectorAll('#results li').length === 10")
    assert _names(page)[0] == "1. coffee.jpg"
    # A file that is not an image: the server's reason, in the alert.
    page.set_input_files("#file", {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"})
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "Not a usable image" in alert.inner_text() and "Pillow" in alert.inner_text()


def test_keyboard_only(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.get_by_text("Ready").wait_for()
    _pick(page, "astronaut", "jpeg_25")
    # Focus order: the file picker, the k menu, the filters, then the neighbours in rank order.
    page.locator("body").focus()
    visited = []
    while visited.count("tile") < 2 and len(visited) < 30:
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.id || document.activeElement.className")
        if not visited or visited[-1] != focused or focused == "tile":  # a date field is 3 stops (d, m, y)
            visited.append(focused)
    filters = ["f-folder", "f-label", "f-from", "f-to", "f-where", "button", "f-clear"]
    assert visited == ["file", "k", *filters, "tile", "tile"]
    # The focused tile shows it: an outline drawn by :focus-visible.
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") == "solid"
    # Enter on a tile searches from it, and focus goes to the new results.
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.id === 'results-heading'", timeout=10_000)
    first_answer = page.locator("#query-caption").inner_text()
    # Space works as well.
    page.keyboard.press("Tab")
    page.keyboard.press(" ")
    page.wait_for_function(
        f"() => document.querySelector('#query-caption').textContent !== {first_answer!r}", timeout=10_000
    )
    # The labelled controls are found by their labels.
    assert page.get_by_label("Neighbours").evaluate("element => element.id") == "k"


def test_narrow_screen(server, browser):
    page = browser.new_page(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True)
    page.goto(server)
    page.get_by_text("Ready").wait_for()
    _pick(page, "rocket", "crop")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    columns = page.evaluate("() => getComputedStyle(document.querySelector('#results')).gridTemplateColumns")
    assert len(columns.split()) == 2
    tile_width = page.locator("#results .tile").first.bounding_box()["width"]
    assert 120 < tile_width < 180
