"""Ids, metadata and filters of an ImageIndex: what is recorded, joined, stored, and how filters read.

The photos are tiny JPEGs with EXIF written by Pillow; the pipeline searches
their raw pixels, so nothing here needs a network.
"""

import datetime
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline, save
from sklearn_imgretrieval.indexing import ImageIndex, build_index, load_index
from sklearn_imgretrieval.indexing._columns import CategoryColumn, StringColumn, Table

TAKEN = ["2022:12:31 23:59:59", "2023:01:01 00:00:00", "2023:06:15 12:30:00", None, "2024:02:29 08:00:00", None]


def _photo(path, shade, size=(24, 16), taken=None, camera=None, orientation=None):
    exif = Image.Exif()
    if camera:
        exif[0x0110] = camera
    if orientation:
        exif[0x0112] = orientation
    if taken:
        exif[0x8769] = {0x9003: taken}  # the Exif IFD as a dict: Pillow 10.0 saves no edit made through get_ifd
    Image.new("RGB", size, (shade, 255 - shade, (7 * shade) % 256)).save(path, exif=exif, quality=95)


@pytest.fixture
def photos(tmp_path):
    """Six JPEGs in folders trip/ and home/, some with EXIF dates and cameras; one turned by EXIF."""
    root = tmp_path / "photos"
    paths = []
    for i, taken in enumerate(TAKEN):
        folder = root / ("trip" if i % 2 == 0 else "home")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i}.jpg"
        _photo(path, 40 * i, taken=taken, camera="Pixel 7" if i < 3 else None, orientation=6 if i == 5 else None)
        paths.append(str(path))
    return root, paths


def _pipe():
    return make_retrieval_pipeline(
        ImagePreprocessor(size=(8, 8), color_mode="rgb"), NearestImageRetriever(n_neighbors=2)
    )


def _index(photos, **kwargs):
    root, paths = photos
    return build_index(paths, _pipe(), root=root, chunk_size=4, **kwargs)


# ------------------------------------------------------------------ records
def test_each_file_is_recorded_from_its_header(photos):
    root, paths = photos
    index = _index(photos)
    frame = index.to_frame()
    assert frame.index.name == "id" and frame.index.tolist() == list(range(6))
    assert frame["folder"].tolist() == ["trip", "home"] * 3
    assert frame["width"].tolist() == [24] * 5 + [16] and frame["height"].tolist() == [16] * 5 + [24]  # upright
    assert frame["file_size"].tolist() == [os.path.getsize(path) for path in paths]
    assert frame["camera"].tolist()[:3] == ["Pixel 7"] * 3 and frame["camera"].isna().tolist()[3:] == [True] * 3
    assert frame["taken"][2] == np.datetime64("2023-06-15T12:30:00") and np.isnat(index.column("taken")[3])
    assert index.column("modified")[0] == np.datetime64(os.stat(paths[0]).st_mtime_ns, "ns")
    assert index.metadata([2], columns=["taken", "folder"]) == [
        {"taken": datetime.datetime(2023, 6, 15, 12, 30), "folder": "trip"}
    ]


def test_recording_reads_headers_only(photos, monkeypatch):
    # Recording must not decode pixels: Image.load is what decodes.
    from sklearn_imgretrieval.indexing._records import record_files

    loaded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(1) or real_load(self))
    table = record_files(photos[1])
    assert loaded == [] and table["width"].tolist() == [24] * 5 + [16]


# ---------------------------------------------------------------------- ids
def test_ids_survive_updates_removals_and_saves(photos, tmp_path):
    root, paths = photos
    index = _index(photos)
    os.remove(paths[1])
    _photo(paths[2], 250, size=(30, 20))  # changed: keeps its id
    os.utime(paths[2], ns=(1, 1))
    extra = root / "trip" / "new.jpg"
    _photo(extra, 99)
    changes = index.update([p for p in paths if p != paths[1]] + [str(extra)])
    assert str(changes) == "1 added, 1 changed, 1 removed"
    id_of = dict(zip(index.paths, index.ids.tolist()))
    assert id_of == {paths[0]: 0, paths[2]: 2, paths[3]: 3, paths[4]: 4, paths[5]: 5, str(extra): 6}
    assert index.column("width")[index.rows_of([2])[0]] == 30  # recorded again
    save(index, tmp_path / "photos.idx")
    loaded = load_index(tmp_path / "photos.idx")
    assert dict(zip(loaded.paths, loaded.ids.tolist())) == id_of
    os.remove(extra)
    loaded.update([p for p in paths if p != paths[1]])
    _photo(extra, 98)
    loaded.update([p for p in paths if p != paths[1]] + [str(extra)])
    assert dict(zip(loaded.paths, loaded.ids.tolist()))[str(extra)] == 7  # never reused
    with pytest.raises(ValueError, match="No image with id 1 in the index"):
        loaded.kneighbors_of([1])


def test_answers_are_ids(photos):
    root, paths = photos
    index = _index(photos)
    os.remove(paths[0])
    index.update(paths[1:])
    distances, ids = index.kneighbors([paths[3]], n_neighbors=2)
    assert ids[0, 0] == 3 and distances[0, 0] == pytest.approx(0, abs=1e-6)  # row 2 since the removal
    assert set(index.kneighbors_of([3], n_neighbors=4, return_distance=False)[0]) == {1, 2, 4, 5}


# ------------------------------------------------------------ user columns
def test_a_csv_joins_by_path_and_keeps_types(photos, tmp_path):
    root, paths = photos
    csv_file = tmp_path / "photos.csv"
    csv_file.write_text(
        "path,stars,price,shot_on,keep,who\n"
        "trip/0.jpg,5,1.5,2023-01-02,true,Ann\n"
        f"{paths[1]},3,,2023-02-03 10:20:30,false,Bob\n"
        "trip/2.jpg,4,2.25,,true,\n"
        "elsewhere/9.jpg,1,1,2020-01-01,false,Zed\n",
        encoding="utf-8",
    )
    with pytest.warns(UserWarning, match=r"1 row\(s\) of .*photos.csv name files that are not in the index.*9\.jpg"):
        index = _index(photos, metadata=csv_file)
    kinds = index.column_kinds()
    assert [kinds[name] for name in ("stars", "price", "shot_on", "keep", "who")] == [
        "number",
        "number",
        "date",
        "number",  # True/False with gaps (no CSV row) become 1.0/0.0/NaN, as in pandas
        "category",
    ]
    assert index.column("stars")[:3].tolist() == [5, 3, 4] and np.isnan(index.column("stars")[3])
    assert index.column("shot_on")[1] == np.datetime64("2023-02-03T10:20:30")
    assert index.select("stars >= 4 and who != None").tolist() == [True, False, False, False, False, False]
    assert index.select("shot_on < '2023-02-01'").tolist() == [True, False, False, False, False, False]


def test_a_dataframe_joins_with_its_dtypes(photos):
    pd = pytest.importorskip("pandas")
    root, paths = photos
    frame = pd.DataFrame(
        {
            "path": paths,
            "rating": np.arange(6),
            "when": pd.to_datetime(["2023-01-01"] * 3 + ["2024-01-01"] * 3),
            "flag": [True, False] * 3,
            "tag": pd.Categorical(["a", "b", "a", None, "c", "a"]),
        }
    ).set_index("path")
    index = _index(photos, metadata=frame)
    assert index.column("rating").dtype == np.int64 and index.column("flag").dtype == bool
    assert index.select("flag and rating > 1").tolist() == [False, False, True, False, True, False]
    assert index.select("when >= '2024-01-01' and tag in ['a', 'c']").tolist() == [False] * 4 + [True, True]
    out = index.to_frame(embeddings=True)
    assert out["tag"].tolist()[:3] == ["a", "b", "a"] and out["embedding"].iloc[0].shape == (192,)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"stars": [1]}, "has no 'path' column"),
        ({"path": ["trip/0.jpg", "trip/0.jpg"], "x": [1, 2]}, "names .*0.jpg more than once"),
        ({"path": ["trip/0.jpg"], "width": [3]}, "'width', a column the index records itself; rename it"),
        ({"path": ["trip/0.jpg"], "x": [object()]}, "mixes object values"),
        ([1, 2], "must be a CSV file, a pandas DataFrame or a dict"),
    ],
)
def test_bad_metadata_is_refused_before_any_work(photos, metadata, message, monkeypatch):
    from sklearn_imgretrieval.indexing import _streaming

    monkeypatch.setattr(_streaming, "embed_files", lambda *args: pytest.fail("files were embedded"))
    with pytest.raises((ValueError, TypeError), match=message):
        _index(photos, metadata=metadata)


# -------------------------------------------------------------- persistence
def _schema_bytes(path):
    with zipfile.ZipFile(path) as archive:
        return len(archive.read("schema.json"))


def test_the_state_is_a_few_arrays_whatever_the_number_of_images(tmp_path):
    images = np.random.default_rng(0).random((2000, 4, 4), dtype=np.float32)
    sizes = []
    for n in (20, 2000):
        small = make_retrieval_pipeline(ImagePreprocessor(), NearestImageRetriever()).fit(images[:n])
        index = ImageIndex(small, [f"/p/{i}.png" for i in range(n)], root="/p", record_files=False)
        save(index, tmp_path / f"{n}.idx")
        sizes.append(_schema_bytes(tmp_path / f"{n}.idx"))
    assert abs(sizes[1] - sizes[0]) < 50  # 100 times the images, the same schema (a few digits longer)


def test_an_index_of_the_earlier_layout_loads(photos, tmp_path, monkeypatch):
    root, paths = photos
    index = ImageIndex(_pipe().fit(paths), paths, root=root)

    def earlier_state(self):  # file format 1: lists of paths and of [size, mtime_ns]
        return {
            "pipeline": self.pipeline,
            "paths": list(self.paths),
            "root": self.root,
            "labels": None,
            "class_names": [],
            "settings": {},
            "file_stats": [[os.path.getsize(p), os.stat(p).st_mtime_ns] for p in self.paths],
        }

    with monkeypatch.context() as patch:
        patch.setattr(ImageIndex, "__getstate__", earlier_state)
        save(index, tmp_path / "old.idx")
    with zipfile.ZipFile(tmp_path / "old.idx") as archive:
        assert paths[0] in archive.read("schema.json").decode()  # the paths are JSON nodes there
    old = load_index(tmp_path / "old.idx")
    assert list(old.paths) == paths and old.ids.tolist() == list(range(6))
    assert old.column("folder").tolist() == ["trip", "home"] * 3 and np.isnan(old.column("width")).all()
    assert old.open_file(0) is None  # no digest recorded: never shown
    assert str(old.update(paths)) == "0 added, 0 changed, 0 removed"  # same size and time: nothing embedded again
    assert old.column("width").tolist() == [24] * 5 + [16]
    with old.open_file(0) as file:  # recorded now
        assert file.read(2) == b"\xff\xd8"


def test_a_file_whose_content_changed_is_not_opened(photos, tmp_path):
    root, paths = photos
    index = _index(photos)
    with index.open_file(1) as file:
        assert file.read() == open(paths[1], "rb").read()
    stat = os.stat(paths[1])
    data = bytearray(open(paths[1], "rb").read())
    data[-3] ^= 1  # one bit, same size, same time
    open(paths[1], "wb").write(data)
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert index.open_file(1) is None
    os.remove(paths[3])
    os.mkfifo(paths[3])  # a FIFO where a photo was: refused without blocking
    assert index.open_file(3) is None


# ---------------------------------------------------------------- filtering
def test_a_filter_runs_inside_the_search(photos):
    index = _index(photos)
    queries = [photos[1][0], photos[1][1]]
    ids = index.kneighbors(queries, n_neighbors=2, where="folder == 'home'", return_distance=False)
    assert np.isin(ids, [1, 3, 5]).all() and ids.shape == (2, 2)
    assert ids[1, 0] == 1
    by_ids = index.kneighbors(queries, n_neighbors=2, where=[1, 3, 5], return_distance=False)
    by_mask = index.kneighbors(queries, n_neighbors=2, where=index.column("folder") == "home", return_distance=False)
    np.testing.assert_array_equal(ids, by_ids)
    np.testing.assert_array_equal(ids, by_mask)
    with pytest.raises(ValueError, match="larger than the subset of 3 gallery items"):
        index.kneighbors(queries, n_neighbors=4, where="folder == 'home'")
    found = index.find_duplicates(10.0, where="folder == 'trip'")
    assert set(found.items) == set(photos[1][0::2])


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("folder == 'trip'", [1, 0, 1, 0, 1, 0]),
        ("'trip' == folder", [1, 0, 1, 0, 1, 0]),
        ("folder != 'trip' and not width > 20", [0, 0, 0, 0, 0, 1]),
        ("taken >= '2023-01-01' and taken < '2024-01-01'", [0, 1, 1, 0, 0, 0]),
        ("'2023-01-01' <= taken < '2024-01-01'", [0, 1, 1, 0, 0, 0]),
        ("taken > '2023-06-15 12:29'", [0, 0, 1, 0, 1, 0]),
        ("taken == None", [0, 0, 0, 1, 0, 1]),
        ("camera != None or id in [4]", [1, 1, 1, 0, 1, 0]),
        ("camera not in ['Pixel 7']", [0, 0, 0, 1, 1, 1]),
        ("id in (0, 5) or (height == 24)", [1, 0, 0, 0, 0, 1]),
        ("file_size > 0 and width >= -1.5e3", [1] * 6),
        ("`folder` == 'home'", [0, 1, 0, 1, 0, 1]),
        ("path == 'nowhere' or folder > 'i'", [1, 0, 1, 0, 1, 0]),
        ("label == 'trip'", [1, 0, 1, 0, 1, 0]),
    ],
)
def test_filter_expressions(photos, where, expected):
    root, paths = photos
    labels, names = np.array([1, 0] * 3), ["home", "trip"]
    index = build_index(paths, _pipe(), root=root, labels=labels, class_names=names)
    assert index.select(where).astype(int).tolist() == expected


HOSTILE = [
    ("__import__('os').system('touch /tmp/pwned')", "function calls"),
    ("folder.__class__.__mro__", "attribute access"),
    ("(lambda: 1)() == 1", "function calls"),
    ("folder == (lambda: 'x')", "lambdas"),
    ("open('/etc/passwd').read() == ''", "function calls"),
    ("folder[0] == 'x'", "subscripts"),
    ("width == 10 ** 100000", "arithmetic"),
    ("width == 99999999999999999999999", "does not fit in 64 bits"),
    ("width == 1" + "0" * 10000, "characters, more than 10000"),
    ("not " * 40 + "width > 1", "nests deeper than 24 levels"),
    ("(" * 300 + "width > 1" + ")" * 300, "not valid syntax"),
    ("id in [" + ",".join(["1"] * 1001) + "]", "more than 1000"),
    ("folder == '" + "x" * 1500 + "'", "longer than 1000 characters"),
    ("__builtins__ == 1", "names starting with _"),
    ("_quoted_name_0 == 1", "names starting with _"),
    ("secret == 1", "there is no column 'secret'"),
    ("folder == f'{folder}'", "f-strings"),
    ("[x for x in folder] == []", "comprehensions"),
    ("folder == b'x'", "bytes values are not allowed"),
    ("(folder := 'x') == 'x'", "assignments"),
    ("width > 1 & height > 1", "write and, or, not"),
    ("width is None", "'is' and 'is not'"),
    ("folder == 1", "holds text"),
    ("width == 'big'", "holds numbers"),
    ("taken > 'last year'", "not a date for taken"),
    ("taken > 2023", "holds dates"),
    ("width", "not a True/False column"),
    ("'a' == 'a'", "a column on one side"),
    ("folder == 'x'; import os", "not valid syntax"),
    ("", "it is empty"),
    ("`unclosed == 1", "backtick is not closed"),
    ("{'a': 1} == folder", "dictionaries"),
]


@pytest.mark.parametrize(("where", "message"), HOSTILE)
def test_hostile_expressions_are_refused_without_running_anything(photos, where, message, monkeypatch):
    index = ImageIndex(_pipe().fit(photos[1]), photos[1], root=photos[0])

    from sklearn_imgretrieval.indexing import _filters

    def forbidden(*args, **kwargs):
        raise AssertionError("the filter ran code")

    for name in ("eval", "exec", "compile"):  # the module's own names shadow the builtins
        monkeypatch.setattr(_filters, name, forbidden, raising=False)
    pandas = pytest.importorskip("pandas")
    monkeypatch.setattr(pandas, "eval", forbidden)
    monkeypatch.setattr(pandas.DataFrame, "query", forbidden)
    with pytest.raises(ValueError, match=message) as caught:
        index.select(where)
    assert "A filter compares columns with values" in str(caught.value)
    assert not os.path.exists("/tmp/pwned")


def test_where_must_be_an_expression_a_mask_or_ids(photos):
    index = ImageIndex(_pipe().fit(photos[1]), photos[1], root=photos[0])
    with pytest.raises(ValueError, match="mask over the index's 6 images"):
        index.select(np.ones(3, dtype=bool))
    with pytest.raises(TypeError, match="a list of image ids"):
        index.select([0.5])
    with pytest.raises(ValueError, match="No image with id 9"):
        index.select([9])


# ------------------------------------------------------------------ columns
def test_string_columns_gather_and_join_in_chunks(monkeypatch):
    from sklearn_imgretrieval.indexing import _columns

    monkeypatch.setattr(_columns, "_GATHER_ROWS", 3)
    words = ["", "é", "ab", "\udcff-undecodable-byte", "x" * 50, "z", "日本"]
    column = StringColumn.from_strings(words)
    rows = np.array([6, 0, 3, 3, 1, 4, 2])
    assert column.take(rows).tolist() == [words[i] for i in rows]
    assert StringColumn.concat([column, column.take([1])]).tolist() == words + ["é"]
    table = Table({"word": column, "n": np.arange(7)}).append(
        Table({"n": np.arange(2), "tag": CategoryColumn.from_values(["a", None])})
    )
    assert table["word"].values().tolist()[-2:] == [None, None]
    assert table["tag"].values().tolist() == [None] * 7 + ["a", None]
    assert json.dumps(Table.from_state(table.state())["n"].tolist()) == json.dumps(list(range(7)) + [0, 1])
