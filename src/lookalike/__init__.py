"""lookalike: search a folder of images by image, offline and fast.

The pipeline, one module per stage: :mod:`~lookalike.decode` (files -> images),
:mod:`~lookalike.preprocess` and :mod:`~lookalike.models` (images -> vectors),
:mod:`~lookalike.indexer` (folders -> store, incrementally), :mod:`~lookalike.store`
(SQLite), :mod:`~lookalike.vector_index` and :mod:`~lookalike.search` (vector -> top-k),
:mod:`~lookalike.evaluate` (retrieval quality) and :mod:`~lookalike.cli`.
"""

from lookalike.collection import Collection
from lookalike.decode import DecodeError
from lookalike.indexer import IndexReport
from lookalike.search import SearchResult

__all__ = ["Collection", "DecodeError", "IndexReport", "SearchResult"]
__version__ = "0.1.0"
