"""What one run of a command writes: every output checked before any work,
written atomically, and named after Ctrl-C.

This is the one place where the commands' outputs are checked against their
inputs: an output that names a file the command reads, or an image file
inside a folder it scans, is refused before anything is read or written.
"""

from pathlib import Path

from .._files import atomic_write, check_outputs
from ._common import UsageError


class CommandOutputs:
    """The files one run of a command writes.

    Attributes
    ----------
    written : list of str
        What this run has written so far, for the line printed after Ctrl-C.
    """

    def __init__(self):
        self.written = []

    def check(self, outputs, *, reads=(), scans=(), figures=()):
        """Refuse outputs that cannot be written or that name an input, before any work.

        Parameters
        ----------
        outputs : list of (str, path or None)
            ``(option, path)`` of each file the run may write.
        reads : list of path
            Files the run reads.
        scans : list of path
            Folders whose images the run reads.
        figures : list of path
            The outputs that are pictures: their format must be one matplotlib writes.
        """
        from .._image_io import IMAGE_EXTENSIONS

        check_outputs(outputs, reads=reads, scans=scans, scanned_suffixes=IMAGE_EXTENSIONS)
        for path in figures:
            if path is not None:
                _check_figure_format(path)

    def save_figure(self, fig, path):
        """Write ``fig`` to ``path`` atomically, in the format its extension names."""
        with atomic_write(path) as file:
            fig.savefig(file, format=Path(path).suffix.lower().lstrip("."), dpi=100, bbox_inches="tight")
        self.written.append(str(path))

    def save_index(self, index, path):
        """Write an ImageIndex in the safe format, atomically."""
        from ..persistence import save

        save(index, path)
        self.written.append(str(path))

    def write_text(self, path, write):
        """Write a text file atomically: ``write(file)`` fills it."""
        with atomic_write(path, "w") as file:
            write(file)
        self.written.append(str(path))

    def interrupted_line(self):
        """The line printed after Ctrl-C: what was kept."""
        kept = ", ".join(self.written)
        return f"imgretrieval: interrupted; {f'kept {kept}' if kept else 'nothing written'}"


def _check_figure_format(path):
    """A picture's format must be one matplotlib writes; a missing matplotlib is reported now."""
    from ..plotting import _pyplot

    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise UsageError(
            f"{path}: matplotlib cannot write {'.' + suffix if suffix else 'files without an extension'}; "
            f"name the picture with one of {', '.join('.' + name for name in sorted(formats))}."
        )
