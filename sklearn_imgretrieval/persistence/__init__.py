"""Model files that load without running code: the one room that reads or refuses a model file.

A pickle (and so a ``joblib`` file) names functions that unpickling calls,
so loading one can run any code its author chose. The files written here
are skops files (``skops.io``, the format scikit-learn's documentation
recommends for untrusted models): a zip archive of JSON that describes the
objects and ``.npy`` arrays read without pickle. Keras networks travel as
their weight arrays (the estimators' ``__getstate__``) and are rebuilt from
the estimator's parameters on load.

One extra member, ``sklearn_imgretrieval.json``, records the format and its
version, the library version and the saved object's type. ``load`` checks
it first, then builds only types it trusts (``_trust``). Pickles are
recognised and refused with one message (``_pickles``), and converted once
when the user trusts one (:func:`convert_pickle`). Objects stored in files
of their own beside the main one (the shards of a sharded retriever) ask
:func:`saving_to` and :func:`loading_from` where (``_context``).
"""

from ._context import PART_NAME, delete_saved, loading_from, saving_to
from ._format import FORMAT_VERSION, HEADER
from ._pickles import load_trusted_pickle, pickle_kind, pickle_refusal
from ._safe_format import convert_pickle, load, save

__all__ = [
    "FORMAT_VERSION",
    "HEADER",
    "PART_NAME",
    "convert_pickle",
    "delete_saved",
    "load",
    "load_trusted_pickle",
    "loading_from",
    "pickle_kind",
    "pickle_refusal",
    "save",
    "saving_to",
]
