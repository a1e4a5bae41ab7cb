"""Reading the safe format without importing skops.

A file written by :func:`~sklearn_imgretrieval.save` is a skops archive: a
``schema.json`` tree of nodes (dicts, lists, JSON scalars, objects built
from their state) and NumPy arrays in ``.npy`` members. Importing skops
lists every scikit-learn estimator, which costs more than a query of an
index takes, so the node kinds this library's objects are made of are read
here, with the same rules as skops: an object is built with ``__new__`` and
given its state (``__setstate__``), never constructed by calling a name from
the file, and only trusted types are built (``_trust``). Arrays are read
with ``allow_pickle=False``, straight from the file, once their declared
size has been checked against the member that holds them.

A file with node kinds not handled here (functions, reduce calls, sparse
matrices, ...) raises :class:`NotReadHere`, and ``load`` hands it to skops.
"""

from __future__ import annotations

import builtins
import importlib
import json
import math
import struct
import zipfile

import numpy as np

from ._trust import library_class, sklearn_estimator

#: The skops protocol whose node kinds are read here.
PROTOCOL = 2
#: The types a dict's keys may be converted with (skops's TypeNode).
_KEY_TYPES = {
    ("builtins", name): getattr(builtins, name) for name in ("str", "int", "float", "bool", "complex", "bytes", "tuple")
}
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local header: 30 bytes


class NotReadHere(Exception):
    """The file holds node kinds this reader does not build; skops does."""


class UntrustedTypes(ValueError):
    """The file names types that are not trusted; ``names`` lists them."""

    def __init__(self, names):
        super().__init__(", ".join(names))
        self.names = names


def _numpy_scalar_type(name):
    scalar = getattr(np, name, None) if name.isidentifier() else None
    return scalar if isinstance(scalar, type) and issubclass(scalar, np.generic) else None


class SchemaReader:
    """Builds the object a file's schema describes.

    Parameters
    ----------
    archive : zipfile.ZipFile
        The open file.
    path : str or path-like
        Its path, read again for arrays.
    trusted : list of str
        Type names the caller trusts besides the library's and scikit-learn's.
    """

    def __init__(self, archive, path, trusted):
        self._archive = archive
        self._path = path
        self._trusted = set(trusted)
        self._built = {}

    # ------------------------------------------------------------ audit
    def untrusted(self, node):
        """Full names of the types ``node`` and its children would build that are not trusted."""
        names, pending = set(), [node]
        while pending:
            item = pending.pop()
            if isinstance(item, list):
                pending.extend(item)
                continue
            if not isinstance(item, dict):
                continue
            loader = item.get("__loader__")
            if loader is None:
                pending.extend(item.values())
                continue
            if loader not in self._loaders():
                raise NotReadHere(loader)
            if loader == "ObjectNode" and self._object_type(item) is None:
                names.add(self._name(item))
            pending.extend(value for key, value in item.items() if key in ("content", "key_types", "shape"))
        return sorted(names)

    @staticmethod
    def _name(node):
        return f"{node.get('__module__')}.{node.get('__class__')}"

    def _object_type(self, node):
        name = self._name(node)
        cls = library_class(name) or sklearn_estimator(name)
        if cls is None and name in self._trusted:
            module_name, _, class_name = name.rpartition(".")
            cls = getattr(importlib.import_module(module_name), class_name, None)
            cls = cls if isinstance(cls, type) else None
        return cls

    # ------------------------------------------------------------ build
    def _loaders(self):
        return {
            "DictNode": self._dict,
            "ListNode": self._list,
            "TupleNode": self._tuple,
            "SetNode": self._set,
            "JsonNode": self._json,
            "TypeNode": self._type,
            "NdArrayNode": self._array,
            "RandomStateNode": self._random_state,
            "ObjectNode": self._object,
            "BytesNode": self._bytes,
            "BytearrayNode": self._bytearray,
        }

    def build(self, node):
        """The object ``node`` describes (a shared node is built once)."""
        key = node.get("__id__")
        if key is not None and key in self._built:
            return self._built[key]
        loader = self._loaders().get(node.get("__loader__"))
        if loader is None:
            raise NotReadHere(node.get("__loader__"))
        value = loader(node)
        if key is not None:
            self._built[key] = value
        return value

    def _dict(self, node):
        if (node["__module__"], node["__class__"]) != ("builtins", "dict"):
            raise NotReadHere(self._name(node))
        key_types = self.build(node["key_types"])
        return {key_type(key): self.build(value) for key_type, (key, value) in zip(key_types, node["content"].items())}

    def _list(self, node):
        return [self.build(item) for item in node["content"]]

    def _tuple(self, node):
        return tuple(self.build(item) for item in node["content"])

    def _set(self, node):
        return {self.build(item) for item in node["content"]}

    def _json(self, node):
        return json.loads(node["content"])

    def _type(self, node):
        module, name = node["__module__"], node["__class__"]
        found = _KEY_TYPES.get((module, name)) or (_numpy_scalar_type(name) if module == "numpy" else None)
        if found is None:
            raise NotReadHere(f"type {module}.{name}")
        return found

    def _array(self, node):
        if node["type"] == "json":  # an object array, as a list of its items
            items = [self.build(item) for item in node["content"]]
            shape = self.build(node["shape"])
            if len(shape) != 1:
                return np.array(items, dtype=object)
            out = np.empty(len(items), dtype=object)  # np.array would make equal-length items 2-D
            for position, item in enumerate(items):
                out[position] = item
            return out
        if node["type"] != "numpy":
            raise NotReadHere(f"array of type {node['type']!r}")
        array = self._read_npy(node["file"])
        if (node["__module__"], node["__class__"]) == ("numpy", "ndarray"):
            return array
        scalar = _numpy_scalar_type(node["__class__"]) if node["__module__"] == "numpy" else None
        if scalar is None:
            raise NotReadHere(self._name(node))
        return scalar(array)

    def _read_npy(self, member):
        """A ``.npy`` member read straight from the file, after its size is checked against the member."""
        info = self._archive.getinfo(member)
        with open(self._path, "rb") as file:
            file.seek(info.header_offset)
            local = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
            if local[0] != b"PK\x03\x04":
                raise ValueError(f"member {member} has no local header")
            file.seek(local[-2] + local[-1], 1)  # its name and extra field
            start = file.tell()
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise ValueError(f"member {member} is a .npy file of version {version}")
            if dtype.hasobject:
                raise ValueError(f"member {member} holds Python objects, which are never unpickled")
            count = math.prod(shape)
            if file.tell() - start + count * dtype.itemsize != info.file_size:
                raise ValueError(f"member {member} does not hold the {shape} {dtype} array its header declares")
            array = np.fromfile(file, dtype=dtype, count=count)
        return array.reshape(shape, order="F" if fortran else "C")

    def _random_state(self, node):
        if (node["__module__"], node["__class__"]) != ("numpy.random.mtrand", "RandomState"):
            raise NotReadHere(self._name(node))
        random_state = np.random.RandomState()
        random_state.set_state(self.build(node["content"]))
        return random_state

    def _object(self, node):
        cls = self._object_type(node)
        if cls is None:  # the audit ran first; a file changed since is refused all the same
            raise UntrustedTypes([self._name(node)])
        instance = cls.__new__(cls)
        if node.get("content") is None:
            return instance
        state = self.build(node["content"])
        if state is not None:
            if hasattr(instance, "__setstate__"):
                instance.__setstate__(state)
            else:
                instance.__dict__.update(state)
        return instance

    def _bytes(self, node):
        return self._archive.read(node["file"])

    def _bytearray(self, node):
        return bytearray(self._bytes(node))


def read_schema(path):
    """``(archive, schema)`` of a file; the archive is open (close it)."""
    archive = zipfile.ZipFile(path)
    try:
        schema = json.loads(archive.read("schema.json"))
    except BaseException:
        archive.close()
        raise
    return archive, schema
