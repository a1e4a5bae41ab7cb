"""What an ONNX file asks of its runtime, read without the ``onnx`` package.

An ONNX graph is a protocol-buffers message (``ModelProto``, onnx.proto).
Before ONNX Runtime parses a graph that came from a file, ``_inference``
needs three things from it: the operator domains it uses (a custom domain
would need a custom-op library, which is code), whether any tensor keeps its
data in an external file (a path that ONNX Runtime would open and read),
and the element type and shape of its inputs and outputs. Importing the
``onnx`` package for that costs about a second (measured 1.1 s on a 2-core
machine, against 0.13-0.3 s for ONNX Runtime itself), more than a whole
query should take, so this module reads the protocol-buffers wire format
directly, following only the fields that can hold those three things:

- ``ModelProto``: ``graph`` (7), ``opset_import`` (8); ``training_info``
  (20) and ``functions`` (25) are refused outright, since an inference
  graph written by this library has neither.
- ``GraphProto``: ``node`` (1), ``initializer`` (5), ``input`` (11),
  ``output`` (12), ``sparse_initializer`` (15).
- ``NodeProto``: ``op_type`` (4), ``attribute`` (5), ``domain`` (7).
- ``AttributeProto``: tensors (5, 10), subgraphs (6, 11), sparse tensors
  (22, 23).
- ``TensorProto``: ``external_data`` (13), ``data_location`` (14).
- ``SparseTensorProto``: ``values`` (1), ``indices`` (2).
- ``OperatorSetIdProto``: ``domain`` (1).
- ``ValueInfoProto`` -> ``TypeProto`` -> ``TypeProto.Tensor`` ->
  ``TensorShapeProto`` -> ``Dimension``, for the inputs and outputs.

Every other field is skipped by its length. A message may repeat a field
that protocol buffers merge, so every occurrence is read. Anything that is
not well-formed wire format, such as a truncated length or a group, is
refused: a reader that skipped it could see a different graph than ONNX
Runtime does.
"""

from dataclasses import dataclass, field

__all__ = ["GraphSummary", "read_graph_summary"]

FLOAT = 1  # TensorProto.DataType.FLOAT
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_MAX_DEPTH = 64  # nested subgraphs (If / Loop / Scan bodies) beyond this are refused

# wire types
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# message kinds
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _OPSET = range(7)

#: kind -> {field number: kind of the message it holds}; fields read by value are handled apart.
_CHILDREN = {
    _MODEL: {7: _GRAPH, 8: _OPSET},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 10: _TENSOR, 6: _GRAPH, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {},
    _OPSET: {},
}
_REFUSED_MODEL_FIELDS = {20: "training information (training_info)", 25: "model-local functions"}


class MalformedGraph(ValueError):
    """The bytes are not a well-formed ONNX model."""


@dataclass
class GraphSummary:
    """What a graph asks of its runtime.

    ``inputs`` and ``outputs`` hold ``(element type, dims)`` of the main
    graph's, each dim an int, or None when it is symbolic or unknown.
    """

    domains: set = field(default_factory=set)  # of nodes and of opset imports
    external_data: int = 0  # tensors whose data is in an external file
    refused: list = field(default_factory=list)  # parts this reader refuses outright
    n_graphs: int = 0  # main graph fields of the model
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)


def _varint(data, pos, end):
    result = shift = 0
    while True:
        if pos >= end:
            raise MalformedGraph("a number runs past the end of its message")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MalformedGraph("a number is longer than 10 bytes")


def _fields(data, start, end):
    """``(field number, wire type, value)`` of each field of the message in ``data[start:end]``.

    ``value`` is the integer of a varint, or the ``(start, end)`` of a
    length-delimited field; None for fixed-size fields.
    """
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MalformedGraph("a field has number 0")
        if wire == _VARINT:
            value, pos = _varint(data, pos, end)
        elif wire == _LENGTH:
            length, pos = _varint(data, pos, end)
            value = (pos, pos + length)
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            value = None
            pos += 8 if wire == _FIXED64 else 4
        else:
            raise MalformedGraph(f"field {number} has wire type {wire} (groups are not part of ONNX)")
        if pos > end:
            raise MalformedGraph(f"field {number} runs past the end of its message")
        yield number, wire, value


def _text(data, span):
    try:
        return bytes(data[span[0] : span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedGraph("a name is not UTF-8") from None


def _length_delimited(number, wire, value):
    if wire != _LENGTH:
        raise MalformedGraph(f"field {number} should be a message or a string, but has wire type {wire}")
    return value


def _value_info(data, span):
    """``(element type, dims)`` of a ValueInfoProto; element type 0 when it is not a tensor."""
    elem_type, dims = 0, []
    for number, wire, value in _fields(data, *span):
        if number != 2:  # type
            continue
        for t_number, t_wire, t_value in _fields(data, *_length_delimited(number, wire, value)):
            if t_number != 1:  # tensor_type
                continue
            for n, w, v in _fields(data, *_length_delimited(t_number, t_wire, t_value)):
                if n == 1 and w == _VARINT:  # elem_type
                    elem_type = v
                elif n == 2:  # shape
                    for d_n, d_w, d_v in _fields(data, *_length_delimited(n, w, v)):
                        if d_n != 1:  # dim
                            continue
                        size = None
                        for s_n, s_w, s_v in _fields(data, *_length_delimited(d_n, d_w, d_v)):
                            if s_n == 1 and s_w == _VARINT:  # dim_value; dim_param (2) stays None
                                size = s_v
                        dims.append(size)
    return elem_type, dims


def read_graph_summary(data):
    """Read what the serialised ``ModelProto`` in ``data`` asks of its runtime.

    Parameters
    ----------
    data : bytes-like
        The ONNX file's bytes.

    Returns
    -------
    summary : GraphSummary

    Raises
    ------
    MalformedGraph
        (a ValueError) when ``data`` is not well-formed.
    """
    data = memoryview(data).cast("B")
    summary = GraphSummary()
    pending = [(_MODEL, 0, len(data), 0)]
    while pending:
        kind, start, end, depth = pending.pop()
        if depth > _MAX_DEPTH:
            raise MalformedGraph(f"subgraphs are nested more than {_MAX_DEPTH} deep")
        children = _CHILDREN[kind]
        for number, wire, value in _fields(data, start, end):
            if kind == _MODEL and number in _REFUSED_MODEL_FIELDS:
                summary.refused.append(_REFUSED_MODEL_FIELDS[number])
            elif kind == _TENSOR and number == 13:
                summary.external_data += 1
            elif kind == _TENSOR and number == 14:
                if wire != _VARINT:
                    raise MalformedGraph("a tensor's data_location is not a number")
                summary.external_data += value == _EXTERNAL
            elif (kind == _NODE and number == 7) or (kind == _OPSET and number == 1):
                summary.domains.add(_text(data, _length_delimited(number, wire, value)))
            elif kind == _GRAPH and number in (11, 12) and depth == 1:
                info = _value_info(data, _length_delimited(number, wire, value))
                (summary.inputs if number == 11 else summary.outputs).append(info)
            elif number in children:
                span = _length_delimited(number, wire, value)
                if kind == _MODEL and number == 7:
                    summary.n_graphs += 1
                pending.append((children[number], *span, depth + 1))
    return summary
