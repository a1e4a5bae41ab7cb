"""Reading an uploaded image from a multipart request, within a size limit.

The limit is enforced while the body arrives: a declared ``Content-Length``
over it is refused before anything is read, and a body without one (chunked)
is counted chunk by chunk and refused as soon as it passes the limit, so a
client cannot make the server buffer more than ``max_bytes``.
"""

from starlette.exceptions import HTTPException
from starlette.requests import Request

__all__ = ["read_uploaded_file"]

#: The multipart field that carries the image.
FIELD = "image"


def _too_large(max_bytes):
    return HTTPException(
        413,
        f"The upload is larger than this server's limit of {max_bytes / 2**20:.1f} MiB; "
        "send a smaller image (or start the server with a larger --max-upload-mb).",
    )


def _limited_receive(receive, max_bytes):
    """``receive`` that raises 413 once more than ``max_bytes`` of body have arrived."""
    received = 0

    async def limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _too_large(max_bytes)
        return message

    return limited


async def read_uploaded_file(request, max_bytes):
    """The bytes and file name of the file in the request's ``image`` field.

    Parameters
    ----------
    request : starlette.requests.Request
        A ``multipart/form-data`` POST.
    max_bytes : int
        Largest request body accepted.

    Returns
    -------
    data : bytes
        The file's content.
    filename : str or None
        The name the client gave it.

    Raises
    ------
    starlette.exceptions.HTTPException
        413 when the body is over ``max_bytes``; 400 when the request is not
        multipart or has no file in the ``image`` field.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(
            400,
            f"Send the image as multipart/form-data in a field named {FIELD!r}, "
            f"for example: curl -F {FIELD}=@cat.jpg URL",
        )
    limited = Request(request.scope, _limited_receive(request.receive, max_bytes))
    # One file and a few fields at most: a form of thousands of parts is refused by Starlette.
    async with limited.form(max_files=1, max_fields=8) as form:
        upload = form.get(FIELD)
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, f"The request has no file in the field {FIELD!r}: send one with -F {FIELD}=@FILE.")
        return await upload.read(), upload.filename
