"""One BLAS thread for the small matrix products of a query.

NumPy's OpenBLAS spreads a product such as a query against 10,000 stored vectors over every
core, then keeps its threads spinning for a while after it returns. The query's next steps
(ONNX Runtime's own threads, the next query's decoding) then share their cores with those
spinning threads: on 2 cores, a warm query took twice the CPU time it needs. One thread
does the product about as fast (it is bound by memory, not arithmetic), and no thread is
left spinning. Done with threadpoolctl (what scikit-learn uses for the same purpose).

The limit is process-wide, so blocks running at once in several threads share it: it is set
when the first begins and lifted when the last ends. (OpenBLAS 0.3.31 ignores a change made
from another thread once the main thread has made one; the server sets one thread for the
whole process at start, so its query threads need none.)
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_active = 0
_limit: Any = None


@functools.cache
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_thread() -> Iterator[None]:
    """BLAS on one thread inside the block; the previous limits come back when the last of
    the blocks running at once (in any thread) ends."""
    global _active, _limit
    with _lock:
        if _active == 0:
            _limit = _controller().limit(limits=1, user_api="blas")
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _limit.restore_original_limits()
                _limit = None
