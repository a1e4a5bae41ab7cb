"""Aliases of the public API's annotations, for type checkers only.

Annotations are strings (``from __future__ import annotations``), so these
aliases cost nothing at run time: their names are imported nowhere but by
type checkers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    import numpy as np
    from numpy.typing import ArrayLike
    from PIL import Image

#: A file's path.
StrPath: TypeAlias = "str | os.PathLike[str]"
#: One image: a file, a PIL image or an array.
ImageLike: TypeAlias = "str | os.PathLike[str] | Image.Image | ArrayLike"
#: Images as the estimators take them: files, PIL images, one array or rows.
Images: TypeAlias = "ArrayLike | Sequence[ImageLike]"
#: A seed, as scikit-learn's ``random_state`` parameters take it.
RandomState: TypeAlias = "int | np.random.RandomState | None"
