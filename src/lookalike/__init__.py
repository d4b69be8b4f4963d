"""lookalike: search a folder of images by image, offline and fast.

The pipeline, one module per stage: :mod:`~lookalike.decode` (files -> images),
:mod:`~lookalike.preprocess` and :mod:`~lookalike.models` (images -> vectors),
:mod:`~lookalike.indexer` (folders -> store, incrementally), :mod:`~lookalike.store`
(SQLite), :mod:`~lookalike.snapshot`, :mod:`~lookalike.vector_index` and
:mod:`~lookalike.search` (query -> encoder -> codec -> index -> records),
:mod:`~lookalike.evaluate` (retrieval quality), :mod:`~lookalike.cli` and
:mod:`~lookalike.service`. The replaceable parts (encoder, codec, index, store) are the
protocols of :mod:`~lookalike.interfaces`.
"""

from lookalike.collection import Collection
from lookalike.decode import DecodeError
from lookalike.indexer import IndexReport
from lookalike.search import SearchResult

__all__ = ["Collection", "DecodeError", "IndexReport", "SearchResult"]
__version__ = "0.1.0"
