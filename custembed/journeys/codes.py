"""The six-character hierarchical location code of a 50 cm cell.

The code covers the square ``[0, 64) × [0, 64)`` metres of the store's frame
(its south-west corner at the store's origin), 128 × 128 cells of 50 cm. A cell
``(ix, iy)`` (``ix = floor(x / 0.5)``) has 7-bit indices; the code spends them
from the most significant bits down, so each character refines the block the
previous ones name:

====== ============ ========================= ========== ===================
level  character    bits of ix, iy            block side symbols
====== ============ ========================= ========== ===================
1      ``A``–``P``  6–5 (a 4 × 4 split)       16 m       16: ``A`` + bx + 4 by
2      ``0``–``3``  4 (a 2 × 2 split)         8 m        4: bx + 2 by
3      ``0``–``3``  3                         4 m        4
4      ``0``–``3``  2                         2 m        4
5      ``0``–``3``  1                         1 m        4
6      ``0``–``3``  0                         0.5 m      4
====== ============ ========================= ========== ===================

In the 2 × 2 levels ``0`` is the south-west quarter, ``1`` south-east, ``2``
north-west, ``3`` north-east. A prefix of ``k`` characters is the block holding
every cell whose code starts with it: ``F`` is the 16 m block ``[16, 32) × [16,
32)``, ``F3`` its north-east 8 m quarter. Stores up to 64 m × 64 m fit
(``custembed.journeys.layout.MAX_SIDE``); a position on or beyond a wall is coded
as the cell along that wall (:meth:`StoreLayout.cell_of`). Letters first, digits
after: a code is never a word of the text's other tokens (``$zone``), and a
byte-level BPE sees the level-1 block as a distinct symbol.

The same scheme in Spark built-ins is ``custembed.jobs.journeys_prepare.location_code``;
a test checks both agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from custembed.journeys.layout import CELL_SIZE, StoreLayout

CODE_LENGTH = 6
LEVELS = CODE_LENGTH
CELL_BITS = 7  # 128 cells of 50 cm per side: 64 m
TOP_LETTERS = "ABCDEFGHIJKLMNOP"  # level 1: 4 × 4 blocks of 16 m
QUARTERS = "0123"  # levels 2-6: 2 × 2 splits
BLOCK_SIDES = (16.0, 8.0, 4.0, 2.0, 1.0, 0.5)  # metres: side of the block a code prefix of 1..6 characters names
COVERED_SIDE = CELL_SIZE * 2**CELL_BITS  # 64 m


def encode_cells(ix: Any, iy: Any) -> np.ndarray:
    """Codes of cells ``(ix, iy)`` (integers in ``[0, 128)``) as a ``<U6`` array."""
    ix = np.asarray(ix, dtype=np.int64)
    iy = np.asarray(iy, dtype=np.int64)
    if ((ix < 0) | (ix >= 2**CELL_BITS) | (iy < 0) | (iy >= 2**CELL_BITS)).any():
        raise ValueError(f"cell indices must be in [0, {2**CELL_BITS}), got ix {ix.min()}..{ix.max()}")
    top = np.array(list(TOP_LETTERS))[(ix >> 5) + 4 * (iy >> 5)]
    chars = [top]
    for bit in range(4, -1, -1):  # levels 2..6
        chars.append(np.array(list(QUARTERS))[((ix >> bit) & 1) + 2 * ((iy >> bit) & 1)])
    codes = chars[0].astype(object)
    for level in chars[1:]:
        codes = codes + level.astype(object)
    return np.asarray(codes, dtype=f"<U{CODE_LENGTH}")


def encode(x: Any, y: Any, layout: StoreLayout) -> np.ndarray:
    """Codes of the 50 cm cells holding positions ``(x, y)`` (metres, the layout's frame), ``<U6`` array.

    Positions on or beyond a wall are coded as the cell along that wall.
    """
    ix, iy = layout.cell_of(x, y)
    return encode_cells(ix, iy)


def decode_cells(codes: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cell indices ``(ix, iy)`` of codes (same shape); ``ValueError`` naming the first invalid code."""
    values = np.asarray(codes, dtype=object)
    shape = values.shape
    flat = values.reshape(-1)
    wellformed = np.array([isinstance(c, str) and len(c) == CODE_LENGTH for c in flat], dtype=bool)
    if wellformed.all() and len(flat):
        points = np.asarray(flat.astype(f"<U{CODE_LENGTH}")).view(np.uint32).reshape(-1, CODE_LENGTH)
        top = points[:, 0].astype(np.int64) - ord(TOP_LETTERS[0])
        quarters = points[:, 1:].astype(np.int64) - ord(QUARTERS[0])
        valid = (top >= 0) & (top < len(TOP_LETTERS)) & ((quarters >= 0) & (quarters < 4)).all(axis=1)
    else:
        valid = wellformed
    if not valid.all():
        bad = flat[int(np.flatnonzero(~valid)[0])]
        raise ValueError(f"not a location code: {bad!r} (6 characters: one of A-P, then five of 0-3)")
    if not len(flat):
        return np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    ix, iy = top % 4, top // 4
    for level in range(CODE_LENGTH - 1):  # each 2 × 2 level adds one bit per axis
        ix = 2 * ix + (quarters[:, level] & 1)
        iy = 2 * iy + (quarters[:, level] >> 1)
    return ix.reshape(shape), iy.reshape(shape)


def decode(codes: Any, layout: StoreLayout) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(x, y)`` in metres of the cells of ``codes`` (the layout's frame).

    A valid code outside the store's walls decodes to its cell centre all the same: whether a
    (generated) position is in the store is the caller's question (``layout.inside``).
    """
    del layout  # the code's frame is the layout's: origin at its south-west corner
    ix, iy = decode_cells(codes)
    return (ix + 0.5) * CELL_SIZE, (iy + 0.5) * CELL_SIZE


def is_code(token: str) -> bool:
    """Whether ``token`` is a well-formed location code."""
    return len(token) == CODE_LENGTH and token[0] in TOP_LETTERS and all(char in QUARTERS for char in token[1:])
