"""lookalike: search a folder of images by image, offline and fast.

The pipeline, one module per stage: :mod:`~lookalike.image.decode` (files -> images),
:mod:`~lookalike.image.preprocess` and :mod:`~lookalike.encode.models` (images -> vectors),
:mod:`~lookalike.pipeline.indexer` (folders -> store, incrementally), :mod:`~lookalike.store.sqlite`
(SQLite), :mod:`~lookalike.search.snapshot`, :mod:`~lookalike.index.exact` and
:mod:`~lookalike.search.engine` (query -> encoder -> codec -> index -> records),
:mod:`~lookalike.analysis.evaluate` (retrieval quality), :mod:`~lookalike.cli` and
:mod:`~lookalike.service`. The replaceable parts (encoder, codec, index, store) are the
protocols of :mod:`~lookalike.interfaces`.
"""

from lookalike.collection import Collection
from lookalike.image.decode import DecodeError
from lookalike.pipeline.indexer import IndexReport
from lookalike.search.engine import Region, SearchResult, Text
from lookalike.search.words import UnknownWords

__all__ = [
    "Collection",
    "DecodeError",
    "IndexReport",
    "Region",
    "SearchResult",
    "Text",
    "UnknownWords",
]
__version__ = "0.1.0"
