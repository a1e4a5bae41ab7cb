"""A search web page and JSON API over an image index: ``imgretrieval serve``.

Needs the ``serve`` extra (Starlette, python-multipart; uvicorn to serve):
``pip install "sklearn-imgretrieval[serve]"``. :func:`create_app` builds the
ASGI app; see docs/serve.md for the endpoints.
"""

try:
    import python_multipart  # noqa: F401  (Starlette parses uploads with it)
    import starlette  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"The web app needs Starlette and python-multipart ({exc.name} is missing): "
        'pip install "sklearn-imgretrieval[serve]"'
    ) from exc

from ._app import create_app

__all__ = ["create_app"]
