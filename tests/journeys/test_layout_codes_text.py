"""Store layouts, the six-character location code and the journey text (no Spark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from custembed.config import ConfigError
from custembed.journeys import codes
from custembed.journeys.layout import CELL_SIZE, Shelf, StoreLayout, load_layout
from custembed.journeys.text import Journey, format_journey, parse_journey

STORES = ("store_a", "store_b")


def tiny_layout() -> StoreLayout:
    """10 × 6 m, one shelf [4, 2] – [6, 4] in zone dairy."""
    return StoreLayout(
        name="tiny",
        width=10.0,
        height=6.0,
        shelves=(Shelf("s1", "dairy", 4.0, 2.0, 6.0, 4.0, ("milk",)),),
        entrance=(1.0, 1.0),
        tills=((8.0, 1.0),),
        exit=(9.0, 1.0),
    )


@pytest.mark.parametrize("name", STORES)
def test_shipped_layouts_load_and_share_zones(name: str) -> None:
    layout = load_layout(name)
    assert layout.name == name
    assert 8 <= len(layout.zones) <= 12
    assert layout.zones == load_layout("store_a").zones
    assert layout.grid_shape == (int(layout.width / CELL_SIZE), int(layout.height / CELL_SIZE))


def test_the_two_stores_differ() -> None:
    a, b = load_layout("store_a"), load_layout("store_b")
    assert (a.width, a.height) != (b.width, b.height)
    assert {(s.x0, s.y0) for s in a.shelves}.isdisjoint({(s.x0, s.y0) for s in b.shelves})


def test_geometry_is_vectorised_and_takes_scalars() -> None:
    layout = tiny_layout()
    x, y = np.array([5.0, 4.0, 1.0, -1.0]), np.array([3.0, 3.0, 1.0, 1.0])
    assert layout.inside(x, y).tolist() == [True, True, True, False]
    assert layout.in_shelf(x, y).tolist() == [True, False, False, False]  # an edge is beside the shelf
    assert bool(layout.in_shelf(5.0, 3.0)) and layout.in_shelf(5.0, 3.0).shape == ()
    crosses = layout.crosses_shelf(np.array([3.0, 3.0, 3.0]), np.array([3.0, 1.0, 4.0]), 7.0, np.array([3.0, 1.0, 4.0]))
    assert crosses.tolist() == [True, False, False]  # through; below; along the top edge
    assert bool(layout.crosses_shelf(3.0, 1.0, 7.0, 5.0))  # diagonal through the middle
    assert not bool(layout.crosses_shelf(3.0, 1.9, 7.0, 1.9))
    assert bool(layout.crosses_shelf(3.0, 1.9, 7.0, 1.9, margin=0.2))
    zones = layout.zone_near(np.array([3.5, 1.0, 5.0]), np.array([3.0, 1.0, 3.0]), 1.0)
    assert zones.tolist() == ["dairy", None, "dairy"]
    assert layout.zones == ("dairy",) and layout.grid_shape == (20, 12)


def test_free_cells_keep_clear_of_shelves() -> None:
    layout = tiny_layout()
    free = layout.free_cells()
    ix, iy = np.nonzero(free)
    cx, cy = (ix + 0.5) * CELL_SIZE, (iy + 0.5) * CELL_SIZE
    assert not layout.in_shelf(cx, cy).any()
    assert layout.shelf_distance(cx, cy).min() >= CELL_SIZE / 2
    assert free.sum() == 20 * 12 - 4 * 4


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bad_store.yaml"
    path.write_text(body)
    return str(path)


GOOD = """width: 10
height: 6
entrance: [1, 1]
exit: [9, 1]
tills: [[8, 1]]
shelves:
  - {name: s1, zone: dairy, rect: [4, 2, 6, 4], products: [milk]}
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[4, 2, 6, 4]", "[8, 2, 11, 4]"), "shelf s1 .* is outside the walls"),
        (
            ("products: [milk]}", "products: [milk]}\n  - {name: s2, zone: meat, rect: [5, 3, 7, 5], products: [ham]}"),
            "shelves s1 and s2 overlap",
        ),
        (("entrance: [1, 1]", "entrance: [5, 3]"), r"entrance \[5.0, 3.0\] is inside a shelf"),
        (("zone: dairy", "zone: Dairy Foods"), "zone 'Dairy Foods' must be lower-case"),
        (("width: 10", "width: 70"), "each side must be in"),
        (("tills: [[8, 1]]", "tills: []"), "no tills"),
        (("height: 6", "height: 6\ncolour: red"), r"unknown key\(s\) \['colour'\]"),
        (("[4, 2, 6, 4]", "[0, 0, 10, 4]"), "cannot be reached from the entrance|inside a shelf"),
    ],
)
def test_bad_layouts_are_config_errors_naming_the_file(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError, match=message) as raised:
        load_layout(path)
    assert "bad_store.yaml" in str(raised.value) and "\n" not in str(raised.value)


def test_good_file_loads_and_missing_one_is_named(tmp_path: Path) -> None:
    assert load_layout(_write(tmp_path, GOOD)).name == "bad_store"
    with pytest.raises(ConfigError, match="store layout not found: store_zz"):
        load_layout("store_zz")


# -- codes -------------------------------------------------------------------------------
def test_codes_round_trip_to_the_cell_centre() -> None:
    layout = load_layout("store_b")
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, layout.width, 2000), rng.uniform(0, layout.height, 2000)
    encoded = codes.encode(x, y, layout)
    assert encoded.dtype == np.dtype("<U6") and all(len(c) == 6 for c in encoded)
    cx, cy = codes.decode(encoded, layout)
    np.testing.assert_allclose(cx, (np.floor(x / CELL_SIZE) + 0.5) * CELL_SIZE)
    np.testing.assert_allclose(cy, (np.floor(y / CELL_SIZE) + 0.5) * CELL_SIZE)
    np.testing.assert_array_equal(codes.encode(cx, cy, layout), encoded)


def test_codes_cover_a_64_m_square_at_50_cm() -> None:
    ix, iy = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    encoded = codes.encode_cells(ix.ravel(), iy.ravel())
    assert len(set(encoded.tolist())) == 128 * 128
    back = codes.decode_cells(encoded)
    np.testing.assert_array_equal(back[0], ix.ravel())
    np.testing.assert_array_equal(back[1], iy.ravel())
    assert codes.encode_cells(0, 0) == "A00000" and codes.encode_cells(127, 127) == "P33333"


def test_every_prefix_is_a_block_holding_the_cell() -> None:
    """A prefix of k characters names a square of side BLOCK_SIDES[k-1] containing the cell."""
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 64, 500), rng.uniform(0, 64, 500)
    encoded = codes.encode_cells(np.floor(x / CELL_SIZE).astype(int), np.floor(y / CELL_SIZE).astype(int))
    for k, side in enumerate(codes.BLOCK_SIDES, start=1):
        groups: dict[str, list[int]] = {}
        for i, code in enumerate(encoded):
            groups.setdefault(code[:k], []).append(i)
        for members in groups.values():
            bx, by = np.floor(x[members] / side), np.floor(y[members] / side)
            assert len(set(bx)) == 1 and len(set(by)) == 1  # one block per prefix
    assert codes.BLOCK_SIDES[-1] == CELL_SIZE


def test_positions_beyond_a_wall_take_the_cell_along_it() -> None:
    layout = tiny_layout()
    assert codes.encode(-0.3, 2.2, layout) == codes.encode(0.1, 2.2, layout)
    assert codes.encode(10.4, 7.0, layout) == codes.encode(9.9, 5.9, layout)


@pytest.mark.parametrize("bad", ["A0000", "A000000", "Q00000", "A00004", "a00000", "", None])
def test_invalid_codes_are_named(bad: object) -> None:
    with pytest.raises(ValueError, match="not a location code"):
        codes.decode(["A00000", bad], tiny_layout())


# -- text --------------------------------------------------------------------------------
def test_text_round_trip() -> None:
    text = format_journey(["A00000", "A00000", "A00001", "A00003"], {1: ["dairy"], 3: ["meat", "bakery"]})
    assert text == "A00000 A00000 $dairy A00001 A00003 $meat $bakery"
    journey = parse_journey(text)
    assert journey == Journey(
        codes=("A00000", "A00000", "A00001", "A00003"),
        purchases=((1, "dairy"), (3, "meat"), (3, "bakery")),
        bad_tokens=0,
    )


def test_parse_tolerates_generated_garbage() -> None:
    journey = parse_journey("  $dairy A00000  A0000 xyz A00001\n$ $Bad P33333 $meat A00001A00001")
    assert journey.codes == ("A00000", "A00001", "P33333")
    assert journey.purchases == ((-1, "dairy"), (2, "meat"))
    assert journey.bad_tokens == 5


def test_format_refuses_markers_outside_the_journey() -> None:
    with pytest.raises(ValueError, match="position 2 outside"):
        format_journey(["A00000", "A00001"], {2: ["dairy"]})
    with pytest.raises(ValueError, match="cannot be a marker"):
        format_journey(["A00000"], {0: ["dairy foods"]})


def test_the_journeys_package_imports_no_pyspark() -> None:
    """It runs in Spark's Python workers and in the model side's processes: numpy, pandas, scipy, sklearn only."""
    import ast

    package = Path(codes.__file__).resolve().parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [name for name in imported if name.startswith("pyspark")], module.name
