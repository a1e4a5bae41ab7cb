"""``imgretrieval query``: the nearest indexed images of query images."""

import json
import sys
from pathlib import Path

from ..persistence import pickle_kind, pickle_refusal
from ._common import UsageError, cluster_arguments, positive_int, shown_path


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "query",
        help="find the nearest indexed images of query images",
        description="Print each query image's nearest indexed images with their distances. "
        "Index files written by earlier versions are pickles, which can run code when loaded: "
        "they are refused unless you pass --trust-pickle, and --convert-to rewrites them once "
        "in the safe format.",
        epilog="example:\n  imgretrieval query photos.idx cat.jpg -k 5 --plot answers.png\n\n"
        "an index from an earlier version (a pickle: only one you made or trust), rewritten once:\n"
        "  imgretrieval query old.joblib --trust-pickle --convert-to photos.idx",
        formatter_class=formatter,
    )
    parser.add_argument("index", help="index file written by `imgretrieval index`")
    parser.add_argument("images", nargs="*", help="query image files")
    parser.add_argument("-k", type=positive_int, default=5, help="neighbours per query (default: 5)")
    parser.add_argument(
        "--where",
        metavar="EXPR",
        help="answer only with images whose metadata match, e.g. \"folder == 'shoot-2023' and taken >= "
        "'2023-01-01'\" (columns: id, path, folder, file_size, width, height, modified, taken, camera, label "
        "and your own from index --metadata)",
    )
    parser.add_argument(
        "--columns",
        metavar="NAMES",
        help="metadata columns in the table, comma-separated, or 'all' (default: label, taken and your own)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table (every column)")
    parser.add_argument("--csv", metavar="FILE", help="also write the answers as CSV, one row per neighbour")
    parser.add_argument("--plot", metavar="PNG", help="also save a picture of the answers")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load an index file that is a pickle (from an earlier version). Loading a pickle "
        "runs any code its author put in it: only for files you made or trust",
    )
    parser.add_argument("--convert-to", metavar="FILE", help="write the index in the safe format to FILE")
    parser.add_argument(
        "--root",
        metavar="FOLDER",
        help="where the indexed folder is now, when it has moved since indexing: answers (and --plot) "
        "name the files there",
    )
    cluster_arguments(parser, "querying")
    parser.set_defaults(run=run)


def read_index(path, *, trust_pickle=False, root=None, client=None):
    """Load an index file: the safe format, or a pickle only with ``trust_pickle``."""
    from ..indexing import load_index

    kind = pickle_kind(path)
    if kind is not None and not trust_pickle:
        raise UsageError(pickle_refusal(path, kind))
    return load_index(path, root=root, trust_pickle=trust_pickle, client=client)


def run(args):
    if not args.images and not args.convert_to:
        raise UsageError("give at least one query image (or only --convert-to FILE to convert the index)")
    # Every output is checked before the index is loaded or an image decoded.
    args.outputs.check(
        [("--convert-to", args.convert_to), ("--plot", args.plot), ("--csv", args.csv)],
        reads=[args.index, *args.images],
        figures=[args.plot],
    )
    if not Path(args.index).is_file():
        raise UsageError(f"no index file at {args.index}")
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise UsageError(f"no such image file: {', '.join(missing)}")
    from ..indexing import dask_client

    with dask_client(args.scheduler, args.workers) as client:
        _query(args, read_index(args.index, trust_pickle=args.trust_pickle, root=args.root, client=client))


def _query(args, index):
    from ..pipeline import set_query_batch_size

    if args.convert_to:
        args.outputs.save_index(index, args.convert_to)
        print(f"wrote {args.convert_to}: the index in the safe format", file=sys.stderr)
    elif args.trust_pickle and pickle_kind(args.index):
        print(
            f"imgretrieval: note: add --convert-to photos.idx to stop needing --trust-pickle for {args.index}",
            file=sys.stderr,
        )
    if not args.images:
        return
    where = _checked_filter(index, args.where)
    shown = _shown_columns(index, args.columns)
    set_query_batch_size(index.pipeline, len(args.images))
    k = min(args.k, len(index) if where is None else int(where.sum()))
    if k == 0:
        raise UsageError(f"no indexed image matches --where {args.where}")
    distances, ids = index.kneighbors(args.images, n_neighbors=k, where=where)
    results = [
        {
            "query": query,
            "neighbors": [
                {"id": int(i), "distance": float(d), **record}
                for i, d, record in zip(ids[row], distances[row], index.metadata(ids[row]))
            ],
        }
        for row, query in enumerate(args.images)
    ]
    if args.json:
        print(json.dumps(results, indent=2, default=_json_value))
    else:
        _print_table(results, shown)
    if args.csv:
        _write_csv(results, index.columns, args.csv, args.outputs)
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.plot:
        from ..plotting import plot_retrieval

        figure = plot_retrieval(args.images, index.paths, index.rows_of(ids), distances)
        args.outputs.save_figure(figure, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)


def _checked_filter(index, where):
    """The rows ``--where`` selects (None for all), or a one-line usage error naming what is wrong."""
    if where is None:
        return None
    try:
        return index.select(where)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"--where {where}: {exc}") from None


def _shown_columns(index, names):
    default = [name for name in index.columns if name in ("label", "taken") or name not in index.BUILT_IN_COLUMNS]
    if names is None:
        return default
    if names == "all":
        return [name for name in index.columns if name not in ("id", "path")]
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in index.columns]
    if unknown:
        raise UsageError(f"--columns: no column {', '.join(unknown)}; the index has {', '.join(index.columns)}")
    return [name for name in chosen if name not in ("id", "path")]


def _json_value(value):
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _cell(value):
    if value is None:
        return "-"
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ", timespec="seconds") if hasattr(value, "hour") else value.isoformat()
    return shown_path(str(value)) if isinstance(value, str) else str(value)


def _print_table(results, shown):
    for result in results:
        print(f"query: {shown_path(result['query'])}")
        header = ["rank", "distance", "id", *shown, "path"]
        rows = [
            [
                str(rank),
                f"{n['distance']:.4f}",
                str(n["id"]),
                *(_cell(n[name]) for name in shown),
                shown_path(n["path"]),
            ]
            for rank, n in enumerate(result["neighbors"], start=1)
        ]
        widths = [max(len(line[c]) for line in [header, *rows]) for c in range(len(header) - 1)]
        for line in [header, *rows]:
            print("  " + "  ".join(cell.rjust(width) for cell, width in zip(line, widths)) + "  " + line[-1])


def _write_csv(results, columns, path, outputs):
    import csv

    names = ["query", "rank", "distance", *columns]

    def write(file):
        writer = csv.DictWriter(file, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for result in results:
            for rank, neighbour in enumerate(result["neighbors"], start=1):
                row = {"query": result["query"], "rank": rank, **neighbour}
                writer.writerow(
                    {
                        name: ""
                        if row[name] is None
                        else _json_value(row[name])
                        if hasattr(row[name], "isoformat")
                        else row[name]
                        for name in names
                    }
                )

    outputs.write_text(path, write)
