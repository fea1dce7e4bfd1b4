"""PostgreSQL storage arithmetic: tuples, TOAST, heap pages and index sizes.

The constants are PostgreSQL's for 8 KB pages (``BLCKSZ = 8192``) on 64-bit machines,
and pgvector's on-disk formats (0.8). The few empirical factors (B-tree fill under
random inserts, GIN bytes per posting when built row by row, pglz's ratio on prose)
were measured with ``bench/size_check.py`` and are named where they are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "PAGE",
    "Column",
    "StoredRow",
    "align",
    "btree_bytes",
    "gin_bytes",
    "heap_bytes",
    "hnsw_bytes",
    "ivfflat_bytes",
    "relation_forks_bytes",
    "store_row",
    "toast_bytes",
    "vector_bytes",
]

PAGE = 8192
PAGE_HEADER = 24
ITEM_ID = 4  # line pointer per tuple
HEAP_USABLE = PAGE - PAGE_HEADER
TUPLE_HEADER = 23  # HeapTupleHeaderData, before the null bitmap and MAXALIGN
TOAST_THRESHOLD = 2032  # TOAST_TUPLE_THRESHOLD: longer tuples are toasted
TOAST_POINTER = 18  # an out-of-line value leaves this in the row
TOAST_CHUNK = 1996  # TOAST_MAX_CHUNK_SIZE
SHORT_VARLENA = 126  # payloads up to this many bytes get a 1-byte header, unaligned
# pglz on English prose longer than ~2 KB (measured on LoCoMo text: 0.57-0.73).
PGLZ_PROSE_RATIO = 0.62
# B-tree leaves split 50/50 under inserts in random key order: ~69 % full on average
# (measured 0.66-0.72); CREATE INDEX packs them to the 90 % fillfactor.
BTREE_RANDOM_FILL = 0.69
BTREE_BUILD_FILL = 0.90


def align(n: float, to: int = 8) -> int:
    """Round ``n`` up to a multiple of ``to`` (MAXALIGN by default)."""
    return int(math.ceil(n / to) * to)


def vector_bytes(dims: int, kind: Literal["vector", "halfvec"]) -> int:
    """One pgvector value: varlena header + dim + unused (8 bytes) + the elements."""
    return 8 + dims * (4 if kind == "vector" else 2)


@dataclass(frozen=True)
class Column:
    """One attribute as stored: payload bytes and how PostgreSQL lays it out.

    ``size`` is the payload without the varlena header for variable-length types.
    ``storage`` is pg_type.typstorage: ``x`` extended (compress, then move out of
    line), ``e`` external (out of line, never compressed), ``p`` plain.
    """

    size: float
    align: int = 1
    varlena: bool = False
    storage: Literal["p", "x", "e"] = "p"
    null: bool = False
    compressible: bool = False  # pglz shrinks it (prose), else it stays as is

    def stored(self) -> float:
        """Bytes the value takes in the row, without alignment padding."""
        if self.null:
            return 0.0
        if not self.varlena:
            return self.size
        return self.size + (1 if self.size <= SHORT_VARLENA else 4)


def _data_size(cols: list[Column]) -> int:
    offset = 0.0
    for c in cols:
        if c.null:
            continue
        short = c.varlena and c.size <= SHORT_VARLENA
        if not short:
            offset = align(offset, c.align)
        offset += c.stored()
    return math.ceil(offset)


def _header(cols: list[Column]) -> int:
    has_nulls = any(c.null for c in cols)
    return align(TUPLE_HEADER + (math.ceil(len(cols) / 8) if has_nulls else 0))


@dataclass(frozen=True)
class StoredRow:
    """Where one row's bytes end up: the heap tuple and its out-of-line values."""

    tuple_bytes: int  # MAXALIGNed heap tuple, header included
    toasted: tuple[int, ...]  # sizes of the values moved to the TOAST table


def store_row(cols: list[Column]) -> StoredRow:
    """Lay out a row the way heap_toast_insert_or_update does for a new tuple.

    Past TOAST_THRESHOLD: first compress the biggest extended values (and push out
    any value bigger than the target by itself), then move the biggest remaining
    extended or external values out of line until the tuple fits.
    """
    cols = list(cols)
    header = _header(cols)
    limit = TOAST_THRESHOLD - header
    out: list[int] = []
    if header + _data_size(cols) <= TOAST_THRESHOLD:
        return StoredRow(align(header + _data_size(cols)), ())
    tried: set[int] = set()
    while _data_size(cols) > limit:
        idx = _biggest(cols, exclude=tried)
        if idx is None:
            break
        tried.add(idx)
        c = cols[idx]
        if c.storage == "x" and c.compressible and c.size > 2 * SHORT_VARLENA:
            cols[idx] = replace(c, size=c.size * PGLZ_PROSE_RATIO, compressible=False)
        if cols[idx].stored() > limit:
            out.append(int(cols[idx].stored()))
            cols[idx] = replace(cols[idx], size=TOAST_POINTER - 1, storage="p", varlena=True)
    while _data_size(cols) > limit:
        idx = _biggest(cols, exclude=set())
        if idx is None:
            break
        out.append(int(cols[idx].stored()))
        cols[idx] = replace(cols[idx], size=TOAST_POINTER - 1, storage="p", varlena=True)
    return StoredRow(align(header + _data_size(cols)), tuple(out))


def _biggest(cols: list[Column], exclude: set[int]) -> int | None:
    best, size = None, float(align(TOAST_POINTER))
    for i, c in enumerate(cols):
        if i in exclude or c.null or c.storage not in ("x", "e"):
            continue
        if c.stored() > size:
            best, size = i, c.stored()
    return best


def heap_bytes(tuples: list[int], fillfactor: float = 1.0) -> float:
    """Expected heap bytes per row for rows whose tuple sizes are ``tuples`` (a sample).

    Each size is placed on pages of its own kind (whole tuples per page, as PostgreSQL
    never splits a tuple), which is what makes ~2 KB rows cost a quarter page each.
    """
    usable = HEAP_USABLE * fillfactor
    per_row = [PAGE / max(1, int(usable // (t + ITEM_ID))) for t in tuples]
    return sum(per_row) / len(per_row)


def toast_bytes(values: list[int]) -> float:
    """TOAST bytes (heap and its index) per value, for values of these sizes moved out.

    Chunks go in value after value; a chunk that does not fit the current page goes
    to the first earlier page with room (as the free-space map offers), else a new
    page. A 6 KB vector (1,536 dimensions) therefore takes a whole page: its three
    full chunks and a small last one leave too little room for the next value's first.
    """
    if not values:
        return 0.0
    free: list[int] = []
    current = -1
    chunks = 0
    for value in values * max(1, 64 // len(values)):
        n = math.ceil(value / TOAST_CHUNK)
        chunks += n
        for k in range(n):
            size = TOAST_CHUNK if k < n - 1 else value - (n - 1) * TOAST_CHUNK
            need = align(TUPLE_HEADER + 1 + 4 + 4 + 4 + size) + ITEM_ID
            if current < 0 or free[current] < need:
                current = next((i for i, f in enumerate(free) if f >= need), -1)
                if current < 0:
                    free.append(HEAP_USABLE)
                    current = len(free) - 1
            free[current] -= need
    placed = len(values) * max(1, 64 // len(values))
    index = chunks * 16 / BTREE_RANDOM_FILL  # (chunk_id, chunk_seq) entries
    return (len(free) * PAGE + index) / placed


def btree_bytes(
    rows: float, key_bytes: float, *, random_order: bool = True, distinct: float | None = None
) -> float:
    """A B-tree over ``rows`` keys of ``key_bytes`` (data after the 8-byte tuple header).

    With ``distinct`` keys fewer than rows, deduplication (PostgreSQL 13+) stores each
    key once with a posting list of 6-byte heap TIDs.
    """
    if rows <= 0:
        return 2 * PAGE  # metapage and an empty root
    per_leaf = (HEAP_USABLE - 16) * (BTREE_RANDOM_FILL if random_order else BTREE_BUILD_FILL)
    leaf_tuple = align(8 + key_bytes) + ITEM_ID
    if distinct is not None and distinct < rows:
        leaf_bytes = max(distinct, 1) * leaf_tuple + rows * 6
    else:
        leaf_bytes = rows * leaf_tuple
    leaves = math.ceil(leaf_bytes / per_leaf)
    inner = math.ceil(leaves * (align(8 + key_bytes) + ITEM_ID) / per_leaf)
    return (1 + leaves + inner) * PAGE


def gin_bytes(postings: float, distinct_keys: float, key_bytes: float) -> float:
    """A GIN index maintained row by row (fastupdate, pending list flushed by vacuum).

    Measured on LoCoMo messages: a GIN index grown by inserts is ~3x the one that
    CREATE INDEX would build from the same rows (posting lists split half-full and
    stay uncompressed longer). ``GIN_POSTING`` and ``GIN_KEY`` are bytes per posting
    (a row containing a key) and per distinct key in that state.
    """
    entry = align(8 + key_bytes + 8) + ITEM_ID
    return (2 + distinct_keys * entry / BTREE_RANDOM_FILL / PAGE) * PAGE + postings * GIN_POSTING


GIN_POSTING = 23.0


def hnsw_bytes(elements: float, dims: int, kind: Literal["vector", "halfvec"], m: int) -> float:
    """pgvector HNSW: an element tuple (heap TIDs + the vector) and a neighbour tuple
    (``(level + 2) * m`` item pointers) per element, kept on the same page when both fit.
    """
    if elements <= 0:
        return 2 * PAGE
    usable = PAGE - PAGE_HEADER - 8  # HnswPageOpaqueData
    element = align(72 + vector_bytes(dims, kind))
    total_pages = 0.0
    # P(level >= l) = m^-l; levels above 3 are too rare to matter.
    for level in range(4):
        share = m**-level - m ** -(level + 1)
        neighbours = align(4 + (level + 2) * m * 6)
        combined = element + neighbours + 2 * ITEM_ID
        per_page = usable // combined
        if per_page >= 1:
            pages = 1 / per_page
        else:  # element and neighbours on pages of their own
            pages = 1 / max(1, usable // (element + ITEM_ID)) + 1 / max(
                1, usable // (neighbours + ITEM_ID)
            )
        total_pages += share * pages
    return (1 + elements * total_pages) * PAGE


def ivfflat_bytes(
    elements: float, dims: int, kind: Literal["vector", "halfvec"], lists: int
) -> float:
    """pgvector IVFFlat: list (centroid) pages, then each list's entries on its own pages."""
    usable = PAGE - PAGE_HEADER - 8  # IvfflatPageOpaqueData
    vec = vector_bytes(dims, kind)
    centroid = align(8 + vec) + ITEM_ID
    centroid_pages = math.ceil(lists / max(1, usable // centroid))
    entry = align(8 + vec) + ITEM_ID
    per_page = max(1, usable // entry)
    # Each list starts a page of its own: half a page of slack per list on average.
    entry_pages = elements / per_page + lists * 0.5 if elements > 0 else lists
    return (1 + centroid_pages + entry_pages) * PAGE


def relation_forks_bytes(heap: float) -> float:
    """Free-space map and visibility map of a vacuumed heap of ``heap`` bytes."""
    pages = heap / PAGE
    fsm = 3 + math.ceil(pages / 4000)  # one leaf FSM page per ~4,000 heap pages, 3 levels
    vm = math.ceil(pages / 32_000) if pages else 0
    return (fsm + max(vm, 1)) * PAGE if pages else 0.0
