"""``imgretrieval dedupe``: find groups of near-duplicate images in a folder."""

import csv
import json
import os
import sys
import time
from pathlib import Path

from ._common import UsageError, cluster_arguments, list_folder, positive_int, shown_path

_METHODS = ("cnn", "phash", "dhash", "ahash", "whash")
_GROUPS_PRINTED = 20
_GROUPS_PLOTTED, _IMAGES_PLOTTED = 10, 8  # plot_duplicates' max_groups and max_per_group
_INDEX_MAX_DISTANCE = 0.15  # cosine, for `imgretrieval index`'s Lite0 features (see ImageIndex.find_duplicates)


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "dedupe",
        help="find groups of near-duplicate images",
        description="Find groups of near-duplicate images in FOLDER (recursively): copies that were cropped, "
        "resized, re-encoded, rotated a little or brightened. Prints the groups and the space that removing "
        "the redundant copies would save; --move-to moves them out of the way (nothing is ever deleted). "
        "Unreadable files are reported and skipped. With --index IDX instead of FOLDER, the images of an index "
        "are compared by the embeddings it stores (nothing is decoded), across all its shards for a sharded one.",
        epilog="examples:\n"
        "  imgretrieval dedupe photos/ --csv duplicates.csv --plot duplicates.png\n"
        "  imgretrieval dedupe photos/ --method phash                  # fast, finds re-encoded/resized copies\n"
        "  imgretrieval dedupe new_photos/ --reference archive/ --csv found.csv\n"
        "  imgretrieval dedupe --index photos.idx --csv duplicates.csv   # the index's embeddings, nothing decoded\n"
        "  imgretrieval dedupe photos/ --move-to duplicates/           # keeps the original of each group\n"
        "  imgretrieval dedupe --undo duplicates/imgretrieval-moves-20250101-120000.json",
        formatter_class=formatter,
    )
    parser.add_argument("folder", nargs="?", help="folder of images")
    parser.add_argument(
        "--index",
        metavar="IDX",
        help="instead of FOLDER: the images of this index (written by `imgretrieval index`), compared by the "
        f"embeddings it stores; --max-distance defaults to {_INDEX_MAX_DISTANCE} for its cosine distances",
    )
    parser.add_argument(
        "--reference", metavar="FOLDER", help="report which images of FOLDER already exist in this folder"
    )
    parser.add_argument(
        "--method",
        choices=_METHODS,
        help="cnn: EfficientNet-Lite0 features (default; finds crops and rotations), or a perceptual hash "
        "(phash, dhash, ahash, whash: much faster, finds re-encoded and resized copies)",
    )
    parser.add_argument(
        "--max-distance",
        "--threshold",
        dest="max_distance",
        type=float,
        metavar="D",
        help="largest distance of duplicates: cosine distance in [0, 2] for cnn (default 0.15), differing "
        "bits for hashes (default for 64 bits: phash 10, dhash 6, ahash 2, whash 2)",
    )
    parser.add_argument("--hash-size", type=int, default=8, help="side of the hash's bit grid, a power of two")
    parser.add_argument(
        "--top-k", type=positive_int, metavar="K", help="keep at most each image's K nearest duplicates"
    )
    parser.add_argument("--robust", action="store_true", help="also find mirrored (horizontally flipped) copies")
    parser.add_argument(
        "--where",
        metavar="EXPR",
        help='only images whose metadata match take part, e.g. "folder == \'shoot-2023\'" or "taken >= '
        "'2023-01-01'\" (the columns of query --where, read from the files' headers)",
    )
    parser.add_argument("--csv", metavar="FILE", help="write the pairs: group, first, second, distance")
    parser.add_argument("--json", metavar="FILE", help="write the groups, the pairs and each image's duplicates")
    parser.add_argument("--plot", metavar="PNG", help="save a picture of the groups, one group per row")
    parser.add_argument(
        "--move-to",
        metavar="FOLDER",
        help="move all but the kept image of each group there (with --reference: every image of FOLDER "
        "found in the reference), keeping their paths relative to FOLDER; never deletes, never overwrites",
    )
    parser.add_argument(
        "--keep",
        choices=("original", "largest", "oldest", "newest", "shortest-path", "first"),
        default="original",
        help="which image of a group stays: original (default: camera metadata, then most pixels, then the "
        "earliest date taken or modified, then a camera's format such as JPEG over PNG, then the largest file), "
        "largest (most pixels, then file size), oldest, newest, shortest-path, first",
    )
    parser.add_argument("--move-log", metavar="FILE", help="log of the moves (default: in the --move-to folder)")
    parser.add_argument("--undo", metavar="LOG", help="move back the files listed in a move log, and stop")
    cluster_arguments(parser, "finding duplicates in a sharded --index")
    parser.set_defaults(run=run)


def _size(n_bytes):
    for unit in ("bytes", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return None


def _undo(log):
    from ..duplicates import undo_moves

    restored, skipped = undo_moves(log)
    back = [path for path, reason in skipped if reason == "a file is already at its old place"]
    if not restored and len(back) == len(skipped):
        print(f"nothing left to move: the {len(skipped)} files listed in {log} are back at their old places")
        return
    print(f"moved back {len(restored)} files listed in {log}")
    for path, reason in skipped:
        print(f"imgretrieval: warning: not moved back: {path} ({reason})", file=sys.stderr)


def _check_outputs(args):
    """Every file and folder the command will write, checked before any image is read."""
    from ..duplicates import check_move_target

    if args.move_to:
        check_move_target(args.move_to, args.folder, args.reference)
        if not args.move_log:
            args.move_log = str(Path(args.move_to) / time.strftime("imgretrieval-moves-%Y%m%d-%H%M%S.json"))
    args.outputs.check(_outputs_of(args), scans=[args.folder, args.reference], figures=[args.plot])


def _outputs_of(args):
    return [("--csv", args.csv), ("--json", args.json), ("--plot", args.plot), ("--move-log", args.move_log)]


def _print_summary(found, redundant, kept, args):
    kept_or_reference = set().union(*map(set, found.groups)) - set(redundant.tolist()) if found.groups else set()
    saved = sum(os.path.getsize(found.items[i]) for i in redundant)
    n_files = sum(len(group) for group in found.groups)
    if found.has_reference:
        print(
            f"{len(redundant)} of {found.n_queries} images in {args.folder} have duplicates in {args.reference} "
            f"({len(found.groups)} groups); removing them would save {_size(saved)}"
        )
    else:
        print(
            f"{len(found.groups)} groups of duplicates: {n_files} of {found.n_queries} images; removing all but "
            f"the kept image of each group ({len(redundant)} files, --keep {args.keep}) would save {_size(saved)}"
        )
    for number, group in enumerate(found.groups[:_GROUPS_PRINTED]):
        print(f"group {number} ({len(group)} images), kept for: {kept[number][1]}")
        for index in group:
            mark = "keep" if index in kept_or_reference else "dup "
            if found.has_reference:
                mark = "ref " if index >= found.n_queries else "dup "
            print(f"  {mark} {shown_path(found.items[index])}")
    if len(found.groups) > _GROUPS_PRINTED:
        print(f"... and {len(found.groups) - _GROUPS_PRINTED} more groups (all in --csv or --json)")
    return kept_or_reference


def _write_csv(found, path, outputs):
    def write(file):
        writer = csv.DictWriter(file, fieldnames=["group", "first", "second", "distance"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(found.pair_rows())

    outputs.write_text(path, write)


def _write_json(found, redundant, kept, path, outputs):
    def name(index):
        item = found.items[index]
        return item if isinstance(item, str) else int(item)

    record = {
        "method": found.method,
        "metric": found.metric,
        "max_distance": found.max_distance,
        "groups": [[name(i) for i in group] for group in found.groups],
        "redundant": [name(i) for i in redundant],
        "kept": [{"item": name(i), "reason": reason} for i, reason in kept],
        "pairs": found.pair_rows(),
        "duplicates": found.to_dict(scores=True),
    }
    outputs.write_text(path, lambda file: json.dump(record, file, indent=1))


def run(args):
    if args.undo:
        if args.folder or args.move_to or args.index:
            raise UsageError("--undo takes only the move log; run it on its own")
        _undo(args.undo)
        return
    if args.index:
        _run_on_index(args)
        return
    if not args.folder:
        raise UsageError("give the FOLDER to scan (or --index IDX, or --undo LOG)")
    if args.scheduler or args.workers:
        raise UsageError("--scheduler and --workers hold the shards of an --index; a FOLDER is scanned here")
    from ..duplicates import check_duplicate_settings, find_duplicates

    max_distance = "auto" if args.max_distance is None else args.max_distance
    settings = check_duplicate_settings(
        args.method or "cnn", max_distance, top_k=args.top_k, hash_size=args.hash_size, robust=args.robust
    )
    if args.reference and not Path(args.reference).is_dir():
        raise UsageError(f"{args.reference} is not a folder")
    _check_outputs(args)
    paths, labels, class_names = list_folder(args.folder)
    if args.where:
        from ..indexing import select_files

        try:
            chosen = select_files(paths, args.where, root=args.folder, labels=labels, class_names=class_names)
        except (ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"--where {args.where}: {exc}") from None
        paths = [path for path, keep in zip(paths, chosen) if keep]
        print(f"--where selects {len(paths)} images of {len(chosen)}", file=sys.stderr)
    reference = list_folder(args.reference)[0] if args.reference else None
    found = find_duplicates(
        paths,
        reference,
        method=settings.method,
        max_distance=settings.max_distance,
        top_k=settings.top_k,
        robust=args.robust,
        hash_size=settings.hash_size,
        n_jobs=-1,
    )
    _report(found, args)


def _run_on_index(args):
    """Duplicates among an index's images, from its stored embeddings (every shard against every shard)."""
    if args.folder or args.reference:
        raise UsageError("--index takes the place of FOLDER and --reference: give one or the other")
    if args.method not in (None, "cnn") or args.robust:
        raise UsageError("--index compares the embeddings the index stores: --method and --robust do not apply")
    if not Path(args.index).is_file():
        raise UsageError(f"no index file at {args.index}")
    if args.max_distance is not None and args.max_distance < 0:
        raise UsageError(f"--max-distance must be 0 or more, not {args.max_distance}")
    args.outputs.check(_outputs_of(args), reads=[args.index], figures=[args.plot])
    from ..indexing import dask_client
    from .query import read_index

    with dask_client(args.scheduler, args.workers) as client:
        index = read_index(args.index, client=client)
        retriever = index.pipeline[-1]
        max_distance = args.max_distance
        if max_distance is None:
            if retriever.metric != "cosine":
                raise UsageError(f"{args.index} measures {retriever.metric} distances: give --max-distance")
            max_distance = _INDEX_MAX_DISTANCE
        args.folder = index.root
        if args.move_to and index.root is None:
            raise UsageError(f"{args.index} does not record the folder it indexed, so --move-to cannot place files")
        # The indexed images are inputs too: no output may name one, checked before anything is written.
        if index.root:
            _check_outputs(args)
        else:
            args.outputs.check(_outputs_of(args), reads=index.paths, figures=[args.plot])
        try:
            found = index.find_duplicates(max_distance, top_k=args.top_k, where=args.where)
        except (ValueError, TypeError, KeyError) as exc:
            if args.where is None:
                raise
            raise UsageError(f"--where {args.where}: {exc}") from None
    _report(found, args)


def _report(found, args):
    from ..duplicates import move_duplicates

    kept = found.kept(keep=args.keep)
    redundant = found.redundant(keep=args.keep)
    kept_or_reference = _print_summary(found, redundant, kept, args)
    if args.csv:
        _write_csv(found, args.csv, args.outputs)
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.json:
        _write_json(found, redundant, kept, args.json, args.outputs)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot and found.groups:
        from ..plotting import plot_duplicates, shown_of_duplicates

        limits = {"max_groups": _GROUPS_PLOTTED, "max_per_group": _IMAGES_PLOTTED}
        args.outputs.save_figure(plot_duplicates(found, keep=sorted(kept_or_reference), **limits), args.plot)
        shown = shown_of_duplicates(found.groups, *limits.values())
        print(f"wrote {args.plot}" + (f", showing {shown}" if shown else ""), file=sys.stderr)
    elif args.plot:
        print(f"no groups of duplicates: {args.plot} not written", file=sys.stderr)
    if args.move_to and len(redundant):
        args.outputs.written.append(f"the log of the moves, {args.move_log}")
        moves = move_duplicates(found, args.move_to, root=args.folder, log=args.move_log, keep=args.keep)
        print(f"moved {len(moves)} files to {args.move_to}; undo with: imgretrieval dedupe --undo {args.move_log}")
    elif args.move_to:
        print("nothing to move")
