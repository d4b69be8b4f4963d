"""Every tunable default of lookalike, in one place.

Library functions take these as explicit keyword arguments whose defaults come from here;
the CLI and the service only ever pass them through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

# --- decoding -------------------------------------------------------------------------------
#: Files larger than this are skipped unread (a 200 MB JPEG is not a photo anyone indexes).
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Images with more pixels than this are refused before their pixels are decoded
#: (decompression bombs; a 100 MP camera still fits).
MAX_IMAGE_PIXELS = 120_000_000
#: ...and images whose decoding into RGB would take more memory than this (the decoded
#: samples, the RGB result and what lies between; see decode.decode_cost): 16-bit images,
#: transparency and very thin images cost more than their pixel count says. A JPEG counts
#: at the reduced scale it is decoded at. A 100 MP RGB PNG (about 400 MiB) still fits.
MAX_DECODE_BYTES = 512 * 1024 * 1024
#: Decodes that take more memory than this run one at a time in the process (several
#: threads decoding big images at once would add up their working sets).
DECODE_ALONE_BYTES = 64 * 1024 * 1024
#: Transparent pixels are composited onto this colour (white: catalogue photos use it).
ALPHA_BACKGROUND = (255, 255, 255)

# --- models ---------------------------------------------------------------------------------
DEFAULT_MODEL = "efficientnet-lite0"
#: The quality tier: Lite0 and Lite2 descriptors concatenated (``--model lite0+lite2``),
#: ahead of Lite0 on every benchmark of docs/EVALUATION.md at 3-5x its embedding time.
QUALITY_MODEL = "efficientnet-lite0+efficientnet-lite2"
#: Built-in models that run in int8 unless --precision says otherwise: those whose int8
#: version stayed within half a point of fp32 on every dataset (docs/EVALUATION.md, "int8"
#: and "quality tier"). The others (Lite1, Lite2 alone) run in fp32 by default.
INT8_BY_DEFAULT = frozenset({"efficientnet-lite0", QUALITY_MODEL})
#: Where models run: "auto" (CUDA for fp32 models when ONNX Runtime offers it, i.e. the
#: onnxruntime-gpu package is installed instead of onnxruntime and a GPU is there; int8
#: models stay on the CPU, whose 8-bit dot products they were built for), "cpu" or "cuda"
#: (an error where CUDA is not available). $LOOKALIKE_PROVIDER overrides it.
PROVIDER: Literal["auto", "cpu", "cuda"] = "auto"


def provider() -> str:
    """The execution provider asked for: $LOOKALIKE_PROVIDER, else :data:`PROVIDER`."""
    return os.environ.get("LOOKALIKE_PROVIDER", "").strip().lower() or PROVIDER


#: How a new collection pools the feature map: generalized mean (p = 3). With the centring
#: below, it won or tied on every benchmark of docs/EVALUATION.md against average pooling.
DEFAULT_POOLING: Literal["avg", "gem"] = "gem"
#: Images per inference call while indexing: small batches stay in the CPU caches
#: (8 ran faster per image than 32 on a 2-core EPYC, see BENCHMARKS.md) and bound memory.
BATCH_SIZE = 8
#: Decoded images with more pixels than this are embedded at once, alone, rather than held
#: until their batch is complete (JPEGs decode at a reduced scale and rarely reach it).
BATCH_IMAGE_PIXELS = 4_000_000
#: Indexing threads, each decoding a batch and running the model on it with one core.
INDEX_WORKERS = os.cpu_count() or 1
#: `index --ray`: a Ray worker embeds this many write batches per call (fewer, larger calls:
#: each costs a round trip); what is written and committed stays one batch at a time.
RAY_BATCHES = 4
#: Calls queued per Ray worker beside the one it runs, so that it never waits for the driver.
RAY_QUEUED = 1
#: Bytes of image files the driver holds in flight for workers that cannot read its paths.
RAY_SENT_BYTES = 256 * 1024 * 1024
#: Times a batch is sent again after the Ray worker embedding it was lost; after that its
#: files are reported (not remembered) and tried again by the next run.
RAY_RETRIES = 3
#: Seconds to wait for a first Ray worker (or a replacement) to start before giving up.
RAY_START_SECONDS = 300.0
#: Attempts (one a second) to reach a Ray cluster's head given by address: Ray's own default
#: (20) keeps a mistyped address or a missing token waiting for 20 s.
RAY_CONNECT_ATTEMPTS = 5

# --- store and search -----------------------------------------------------------------------
DEFAULT_K = 10
#: Results fetched beyond ``k``: an image deleted after a search's snapshot was taken has no
#: record any more and is left out, and the next one takes its place.
DELETED_SLACK = 4
#: The index a collection searched exactly holds in memory (lookalike.index.registry).
DEFAULT_INDEX = "exact"
#: Rows read per batch when building an index, scanning the store (``search --exact``) or
#: predicting categories (20,000 x 1280 float32: 100 MB).
SCAN_BATCH = 20_000
#: Page size of a new SQLite collection file (an existing file keeps its own). With SQLite's
#: default 4 KB a 5 KB float32 vector (1280-d) spills into overflow pages; 16 KB pages hold
#: three whole rows (six of float16). Writing 10,000-row batches of 1280-d float32 rows ran at
#: 38,770-48,057 rows a second with 16 KB pages against 30,125-34,864 with 4 KB and
#: 30,535-31,495 with 8 KB (one 5 KB row a page) on the 2-core VM (benchmarks/
#: bench_bulk_writes.py; BENCHMARKS.md, "Bulk import"). 64 KB wrote faster still but reads a
#: 64 KB page for each vector fetched by id (re-scoring, lookups).
SQLITE_PAGE_SIZE = 16_384
#: Changes a bulk write (``lookalike import``) queues on the writer while it reads and
#: converts the next batch: the file is read while the batch before is written (two cores
#: at work), and memory holds at most this many batches more.
WRITES_AHEAD = 2
#: How a new SQLite collection stores its vectors: ``float16`` (2 bytes a dimension, as
#: PostgreSQL's ``halfvec``; read back as float32) or ``float32``. A file keeps the format it
#: was made with: those made before schema 4 stay float32 (README, "What a collection keeps").
SQLITE_VECTOR_FORMAT = "float16"
#: Results below this cosine are shown as weak matches (see docs/EVALUATION.md, "Weak
#: matches"): a query unlike anything in the collection still gets k results.
WEAK_MATCH = 0.4
#: A query of words alone (``search --text``): results below this cosine between the image
#: and the words' direction are weak matches (see docs/EVALUATION.md, "Search by words").
WEAK_WORDS = 0.15
#: A photo searched with words (``search PHOTO --text WORDS``) is searched among at most this
#: many of the images the words find (those not weak matches of them).
WORD_CANDIDATES = 500
#: `index --index auto` (the default) searches exactly below this many images, and with an
#: approximate FAISS index (HNSW graph over 8-bit codes of PCA-256 vectors) from it on: see
#: BENCHMARKS.md, "Large collections".
ANN_MIN_IMAGES = 50_000
#: The approximate index kind `auto` picks: "ivf" (k-means cells, a query scans the nprobe
#: nearest) or "hnsw" (a graph). With the refine step below, IVF won or tied on all four data
#: shapes of BENCHMARKS.md ("Approximate search on four data shapes", 100,000 images, real
#: held-out queries): recall@10 0.96-0.99 where HNSW at efSearch 256 got 0.68-0.99 (0.68 on
#: dense families of near-variants), at a similar search step; it also builds 2.4-7x faster and
#: deletes for real.
ANN_KIND = "ivf"
#: HNSW candidates per query; IVF cells scanned per query.
ANN_EF_SEARCH = 128
ANN_NPROBE = 128
#: Candidates the approximate index returns for a top k (at least ANN_REFINE_POOL, and
#: ANN_REFINE_PER_RESULT per result asked): they are re-scored with the store's full vectors
#: through the codec before the top k is cut (lookalike.index.refine), so an image's score is
#: the exact scan's. On the four shapes of BENCHMARKS.md every pool from 20 to 200 gave the
#: same recall (the cells scanned, not the pool, limit it; a search asks for k + 4 = 14);
#: 50 leaves room for denser collections for about a millisecond more.
ANN_REFINE_POOL = 50
ANN_REFINE_PER_RESULT = 3
#: A writer saves the approximate index at most this often (and when the collection closes).
#: A saved index records the store's change cursor and is caught up from it when loaded, so
#: a save behind the store costs a few milliseconds at the next open, while a save after
#: every upload would write the whole index (536 MB at a million images) each time.
ANN_SAVE_SECONDS = 60.0
#: Vectors PCA is fitted on (a random sample: never the whole collection at once).
PCA_SAMPLE = 50_000

# --- re-ranking (search --rerank, lookalike.search.rerank) ------------------------------------
#: Neighbours (besides the vector itself) averaged into each indexed vector.
RERANK_DBA_K = 3
#: Top results averaged into each query.
RERANK_QE_K = 5
#: Weight of a neighbour: cosine ** RERANK_ALPHA (0 for negative cosines).
RERANK_ALPHA = 3.0
#: Rows per neighbour-pass batch (bounds the score matrix of an exact index).
RERANK_BATCH = 1024
#: Fewer images than this: re-ranking has too few neighbours to average and is skipped.
RERANK_MIN_IMAGES = RERANK_DBA_K + RERANK_QE_K + 2
#: Candidates an approximate index returns for re-scoring (at least, and per result asked).
RERANK_POOL = 200
RERANK_POOL_PER_RESULT = 4
#: Re-ranking never moves the plain search's best match off the top: it stays first, and the
#: plain results scoring within RERANK_NEAR_TOP of it (RERANK_KEEP_TOP in all, at most) follow
#: it in their plain order; re-ranking orders the rest (docs/EVALUATION.md, re-ranking).
RERANK_KEEP_TOP = 3
RERANK_NEAR_TOP = 0.05

# --- categories, compression, groups ---------------------------------------------------------
#: Category-first search scans the smallest set of top categories whose predicted
#: probabilities add up to this...
CATEGORY_COVERAGE = 0.8
#: ...unless it takes more categories than this: then the prediction is unsure and the whole
#: collection is searched.
MAX_CATEGORIES = 3
#: How category-aware search uses the predicted categories where the collection has the
#: labels' projection (an exact index): "soft" ranks every image by its cosine in the
#: projected space plus CATEGORY_WEIGHT times the log of the probability of its category,
#: so that no query falls back to an unordered whole collection (measured better on every
#: split in docs/EVALUATION.md); "filter" searches only the top categories (the two settings
#: above), the whole collection when the prediction is unsure.
CATEGORY_RANKING: Literal["soft", "filter"] = "soft"
CATEGORY_WEIGHT = 0.2
#: Soft ranking searches a query's most probable categories one at a time, at most this many,
#: stopping when no image of the next one can make the top k; then all the others at once.
CATEGORY_ROUNDS = 8
#: Query localization when none is asked for (on a collection indexed without one): "border"
#: also searches with the object cut from the photo when its background is plain
#: (lookalike.image.localization), each result at its better score. Clean photos measured
#: unchanged; photos of pictures on walls and objects in scenes improved (EVALUATION.md).
QUERY_LOCALIZE: Literal["none", "border"] = "border"
#: A region of a query photo (the `box` of a search) is cut from the photo decoded at this
#: many times the model's decode side, so that a small region keeps its detail.
REGION_DECODE_SCALE = 2
#: PCA dimensions of a compressed index (`index --pca` without a number).
PCA_DIMS = 256
#: Above this many images, `cluster` clusters a random sample of this size and gives every
#: other image its nearest sample centroid (a batch at a time: never every vector at once).
CLUSTER_SAMPLE = 50_000
#: The vector codec of a new collection (settings of compression.fit): the collection's
#: mean is subtracted (dims 0: no reduction). See docs/EVALUATION.md, "default descriptor".
DEFAULT_CODEC: dict[str, object] = {"dims": 0}
#: A codec is fitted once the collection has this many images; below, raw cosine (a mean
#: of a handful of images says little, and tiny collections measured the same either way).
CODEC_MIN_IMAGES = 20
#: HDBSCAN's smallest group (`cluster --auto`): fewer images are called noise.
MIN_CLUSTER_SIZE = 5
#: Dimensions the vectors are reduced to (PCA) before clustering, by method; 0 keeps them
#: all. HDBSCAN's neighbour queries slow down quickly with the dimension, k-means' do not.
CLUSTER_PCA_DIMS: dict[str, int] = {"kmeans": 128, "hdbscan": 64}
#: Above this many images k-means switches to the mini-batch variant.
CLUSTER_MINIBATCH_ABOVE = 50_000
#: Cosine at or above which two images are near-duplicates (see docs/EVALUATION.md).
DUPLICATE_THRESHOLD = 0.92
#: Near-duplicate pairs kept per image at most (its best ones).
DUPLICATE_MAX_NEIGHBOURS = 10
#: HNSW candidate list when the approximate index looks for near-duplicates.
DUPLICATE_EF_SEARCH = 32
#: IVF cells scanned per image when the approximate index looks for near-duplicates: they
#: are an image's very closest neighbours, in its own cell or the next (102,000 vectors with
#: 2,000 planted near-copies, `benchmarks/sweep_duplicates.py`: 4 to 128 cells found the same
#: 2,000 groups; 8 cells took 9.2 s, 128 cells 59.8 s, on the shared 2-core VM).
DUPLICATE_NPROBE = 8
#: Scores the exact near-duplicate join holds at once: 16 Mi float32 = 64 MiB, plus a 16 MiB
#: mask.
DUPLICATE_BLOCK_ELEMENTS = 16 * 1024 * 1024
#: Candidates from the approximate index's neighbours are kept down to ``threshold -
#: DUPLICATE_CANDIDATE_MARGIN`` in the index's space (PCA-256, 8-bit codes), then scored
#: again on the stored vectors.
DUPLICATE_CANDIDATE_MARGIN = 0.1
#: Within a group: a near-duplicate (the same picture edited), not another shot, at cosine >=
#: DUPLICATE_NEAR_COSINE, or at >= DUPLICATE_NEAR_HASH_COSINE with perceptual hashes at most
#: DUPLICATE_NEAR_HASH_BITS of 64 bits apart (analysis/duplicate_tiers.py; measured by
#: benchmarks/eval_duplicates.py --tiers, docs/EVALUATION.md).
DUPLICATE_NEAR_COSINE = 0.97
DUPLICATE_NEAR_HASH_COSINE = 0.85
DUPLICATE_NEAR_HASH_BITS = 10
#: The fitted PCA is refitted when the collection grew or shrank by more than this fraction.
PCA_REFIT_FRACTION = 0.1

# --- service (lookalike serve; each is a ServiceSettings field) --------------------------------
#: Largest uploaded image, in bytes and in pixels (read from its header before decoding).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 50_000_000
#: Images in one upload request, and all of their bytes together.
MAX_FILES_PER_REQUEST = 32
MAX_REQUEST_BYTES = 100 * 1024 * 1024
#: Most queries embedded in one model run by the query batcher.
SEARCH_MAX_BATCH = 8
#: Query files ``lookalike search`` describes and searches together: with ``--exact`` each
#: such batch scans the store once; it bounds the decoded query images held at once.
CLI_SEARCH_BATCH = 256
#: Thumbnails kept in memory.
THUMBNAIL_CACHE = 1024
#: Longest side of the JPEG preview of an uploaded query (POST /preview): what the page shows
#: when the browser cannot draw the upload itself (HEIC), large enough to drag a box on.
PREVIEW_SIDE = 1024
#: Values listed per facet (category, folder, cluster) when browsing, most common first.
FACET_SIZE = 30
#: Indexing jobs queued or running at once in `serve` (more are refused with 409): each holds
#: its paths and report in memory until it runs.
MAX_QUEUED_JOBS = 64
#: Seconds `serve` waits for the next request on an idle keep-alive connection ...
HTTP_KEEP_ALIVE_SECONDS = 5
#: ... and for a request's headers, from the connection (or the previous response) on: a
#: client that connects and sends nothing, or its headers a byte at a time, is cut off.
HTTP_HEADER_SECONDS = 10
#: Most bytes of a request's headers.
HTTP_MAX_HEADER_BYTES = 64 * 1024
#: Query images with more pixels than this share one decode slot (so that a few huge ones
#: cannot hold up ordinary searches).
LARGE_QUERY_PIXELS = 16_000_000


def cache_dir() -> Path:
    """Where built model graphs are cached: $LOOKALIKE_CACHE, else the XDG cache folder."""
    explicit = os.environ.get("LOOKALIKE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lookalike"


def data_dir() -> Path:
    """Where collections live by default: $XDG_DATA_HOME/lookalike (~/.local/share/lookalike)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lookalike"


def demo_db() -> Path:
    """Where ``lookalike demo`` puts the sample collection: among the collections that a
    plain ``lookalike serve`` serves (:func:`collections_dir`), so the page shows it."""
    return collections_dir() / "demo.db"


def collections_dir() -> Path:
    """The folder of collections that ``lookalike serve`` serves (and creates) by default."""
    return data_dir() / "collections"


def default_db() -> Path:
    """The collection used when none is named: $LOOKALIKE_DB, else data_dir()/lookalike.db."""
    explicit = os.environ.get("LOOKALIKE_DB")
    return Path(explicit) if explicit else data_dir() / "lookalike.db"


#: PostgreSQL store (--db postgresql://...): connections per process (searches run in parallel
#: up to this many), and the HNSW search breadth (hnsw.ef_search). Recall@10 against exact
#: search (benchmarks/bench_postgres.py, BENCHMARKS.md): on 100,000 Caltech-like 1280-d
#: vectors 0.974 to 0.985 at pgvector's default (40), 0.989 to 0.9995 at 100; on 1,000,000,
#: 0.940 at 40, 0.9495 at 100 and 0.968 at 200: 200 keeps recall above 0.95 at a million.
PG_POOL_SIZE = 4
PG_EF_SEARCH = 200
#: A batch of at least this many rows goes to PostgreSQL as one binary COPY (into a temporary
#: table, then one INSERT from it); smaller ones (an upload) as one statement per row.
PG_COPY_ROWS = 100
#: A run of writes (an import, an index run) of at least this many rows, and at least as many
#: as the collection holds, loads without the searched column's HNSW index and builds it
#: after (PostgresStore.bulk_load); smaller runs keep the index live.
PG_BULK_LOAD_ROWS = 10_000
#: maintenance_work_mem of the session that builds an HNSW index: pgvector builds fast while
#: the graph fits in it and far slower once it does not (the server's default is 64 MB).
PG_INDEX_BUILD_MEMORY = "1GB"
#: A category-filtered search on PostgreSQL over at most this many rows reads them all (by
#: their ids, through the primary key) and ranks them exactly; a larger filter walks the HNSW
#: index with pgvector's iterative scan, testing each row it meets against a bitmap of the
#: allowed ids. At 1,000,000 rows (1280-d) the walk took 8 to 63 ms for categories of 3,400
#: to 6,400 rows where reading and ranking them took 80 to 214 ms (under load, by
#: benchmarks/bench_postgres.py's data; BENCHMARKS.md "Category-filtered search"): the exact
#: scan pays for every row (about 30 us each, vectors stored out of line), so only small
#: filters, where the walk's recall is also at its weakest, get it.
PG_EXACT_FILTER_ROWS = 1000
