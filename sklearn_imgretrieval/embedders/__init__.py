"""Keras embedders: images (rows or 4-D arrays) to embeddings.

Importing this package does not import Keras; each module below does, and is
loaded on first use through ``sklearn_imgretrieval.__getattr__``.
"""
