"""``lookalike serve``: the HTTP API and the web page, in one process.

A served folder (``--collections DIR``) holds one collection per file, and the images
uploaded into each, stored by content::

    DIR/<name>.db                   a collection (see :class:`lookalike.Collection`)
    DIR/<name>.files/ab/ab12...jpg  uploads: sha256 of the bytes + the decoded format's suffix

``--db PATH`` serves one more collection, named after the file's stem, whose uploads go to
``PATH`` with the suffix ``.files``.

How a search by upload runs: the request's image is decoded on a worker thread (never on the
event loop), then goes to the model's :class:`QueryBatcher`. Its threads, one per core, each
describe every query waiting at that moment as the library does (the object cut from a photo
on a plain background too) with one core, then search each collection once for the batch's
queries with the same options, through the library's one search path. Letting ONNX Runtime,
or BLAS for the top-k, spread each query over every core instead makes concurrent queries
fight for the same cores; see BENCHMARKS.md.

Safety: writes need ``Authorization: Bearer <token>`` when a token is set (searching by upload
is a read, and does not); cross-site browser writes are refused; request bodies and uploaded
images are limited while they are read; images are decoded by content; files are served by
id only; server-side paths are accepted only inside the configured roots (symbolic links
resolved); nothing is ever fetched from a URL.
"""

from lookalike.service.app import create_app, serve
from lookalike.service.batcher import QueryBatcher
from lookalike.service.core import Service
from lookalike.service.jobs import Job, Jobs
from lookalike.service.metrics import Metrics
from lookalike.service.registry import Collections
from lookalike.service.security import is_loopback, read_token
from lookalike.service.settings import ServiceSettings

__all__ = [
    "Collections",
    "Job",
    "Jobs",
    "Metrics",
    "QueryBatcher",
    "Service",
    "ServiceSettings",
    "create_app",
    "is_loopback",
    "read_token",
    "serve",
]
