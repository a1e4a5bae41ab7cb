"""``imgretrieval evaluate``: retrieval metrics of an embedder on a labelled set."""

from ._common import (
    check_enough_images,
    embedder_arguments,
    embedder_settings,
    evaluate,
    fit_components_to,
    labelled_dataset,
    make_embedder,
    metrics_table,
)


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "evaluate",
        help="retrieval metrics of an embedder on a labelled image set",
        description="Gallery/query split of a labelled set (digits, fashion-mnist, or a folder whose "
        "subfolders are the labels); prints P@10, mAP@100 and 5-NN accuracy against raw pixels.",
        epilog="examples:\n"
        "  imgretrieval evaluate --dataset digits\n"
        "  imgretrieval evaluate --dataset digits --embedder pca",
        formatter_class=formatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits, fashion-mnist or a folder (default: %(default)s)")
    embedder_arguments(parser)
    parser.set_defaults(run=run)


def run(args):
    from .. import ImagePreprocessor

    Xg, yg, Xq, yq, dataset_size = labelled_dataset(args.dataset)
    settings = embedder_settings(args)
    check_enough_images(settings["embedder"], len(Xg), f"the gallery split of {args.dataset}")
    size = tuple(args.size) if args.size else (dataset_size or tuple(settings["size"]))
    # The bundled sets are grayscale; a pretrained CNN repeats gray to 3 channels itself.
    color = "grayscale" if dataset_size else settings["color"]
    data = (Xg, yg, Xq, yq)
    embedder = make_embedder(settings)
    fit_components_to(embedder, len(Xg), size[0] * size[1] * (1 if color == "grayscale" else 3))
    rows = [
        evaluate("raw pixels", [ImagePreprocessor(size=size, color_mode=color)], data),
        evaluate(settings["embedder"], [ImagePreprocessor(size=size, color_mode=color), embedder], data),
    ]
    print(metrics_table(rows))
