"""``imgretrieval serve``: start-up errors before the port opens, a real server, Ctrl-C.

Errors are checked in-process (they end before uvicorn starts); the server
itself runs in a subprocess, as a user starts it, on a pixel index that
needs no network so that it starts in a few seconds.
"""

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import joblib
import pytest
from PIL import Image

pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")

from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, cli, make_retrieval_pipeline, save
from sklearn_imgretrieval.indexing import ImageIndex
from sklearn_imgretrieval.persistence import HEADER

pytestmark = pytest.mark.network  # the server starts in new processes, each importing TensorFlow


@pytest.fixture(scope="module")
def index_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for colour in ["red", "green", "blue", "yellow"]:
        paths.append(folder / f"{colour}.png")
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=(8, 8)), NearestImageRetriever(n_neighbors=2)).fit(paths)
    path = folder / "pictures.idx"
    save(ImageIndex(pipe, paths, root=folder), path)
    return path


def _error_of(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("imgretrieval: error: "), err
    return err


def test_a_missing_index_is_reported_before_the_port_opens(tmp_path, capsys):
    assert "No file at" in _error_of(["serve", str(tmp_path / "none.idx"), "--port", "0"], capsys)


def test_a_pickled_index_is_refused_with_the_way_to_convert_it(tmp_path, capsys):
    old = tmp_path / "old.idx"
    joblib.dump({"format": "sklearn-imgretrieval-index", "pipeline": None}, old)
    err = _error_of(["serve", str(old), "--port", "0"], capsys)
    assert "is a pickle" in err and f"imgretrieval query {old} --trust-pickle --convert-to converted.idx" in err


def test_an_index_of_a_newer_format_is_refused(index_file, tmp_path, capsys):
    newer = tmp_path / "newer.idx"
    with zipfile.ZipFile(index_file) as old, zipfile.ZipFile(newer, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == HEADER:
                data = json.dumps({**json.loads(data), "format_version": 99, "library_version": "9.0"})
            new.writestr(info, data)
    err = _error_of(["serve", str(newer), "--port", "0"], capsys)
    assert "in file format 99" in err and "Upgrade" in err


def test_a_port_in_use_is_named(index_file, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _error_of(["serve", str(index_file), "--port", str(port)], capsys)
    assert f"port {port} on 127.0.0.1 is in use" in err and "--port" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "70000"], "--port must be from 0 to 65535, got 70000"),
        (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not an address of this machine"),
    ],
)
def test_bad_addresses_are_refused(index_file, argv, message, capsys):
    assert message in _error_of(["serve", str(index_file), *argv], capsys)


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


#: The command in a fresh Python whose SIGINT is set first, whatever the test runner's is: from a
#: terminal, Python's own handler (KeyboardInterrupt); as a background job of a script, ignored
#: (inherited that way, which is how `serve` was once seen to exit 0 without a word).
_WITH_SIGINT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, {handler}); sys.argv[0] = 'imgretrieval'; "
    "runpy.run_module('sklearn_imgretrieval', run_name='__main__')"
)


@pytest.mark.parametrize("handler", ["signal.default_int_handler", "signal.SIG_IGN"], ids=["terminal", "ignored"])
def test_serves_the_index_read_only_and_stops_cleanly_on_ctrl_c(index_file, handler):
    before = (index_file.read_bytes(), index_file.stat().st_mtime_ns)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    code = _WITH_SIGINT.format(handler=handler)
    server = subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(index_file), "--port", "0", "-k", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert select.select([server.stdout], [], [], 60)[0], "the server printed nothing in 60 s"
        line = server.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+)", line).group(1)
        assert f"serving {index_file} (4 images)" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                status, health = _get(f"{url}/api/health")
                break
            except urllib.error.HTTPError as exc:  # 503 while the model warms up
                assert exc.code == 503 and exc.headers["Retry-After"] and time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 200 and health["status"] == "ready"
        status, neighbours = _get(f"{url}/api/images/0/neighbors")
        assert status == 200 and neighbours["k"] == 3  # -k sets the default
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 130
    assert err.strip() == "imgretrieval: interrupted; nothing written", err
    assert (index_file.read_bytes(), index_file.stat().st_mtime_ns) == before
    with pytest.raises(OSError):  # the port is closed
        urllib.request.urlopen(f"{url}/api/health", timeout=2)


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and "imgretrieval serve photos.idx" in out and "127.0.0.1" in out


def test_serving_an_index_without_a_network_does_not_import_keras(index_file):
    code = f"""
import sys
from starlette.testclient import TestClient
from sklearn_imgretrieval.serve import create_app

with TestClient(create_app({str(index_file)!r}), base_url="http://127.0.0.1") as client:
    assert client.get("/api/images/0/neighbors").status_code == 200
assert "keras" not in sys.modules and "tensorflow" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True)
