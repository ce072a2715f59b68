"""Chip grids: coverage, ordering, cutting, and painting chip labels back to pixels.

The back-projection is checked against a brute-force per-pixel vote that counts,
for every pixel, the chips of each label covering it, and breaks ties by the
documented rule (the label of the chip whose centre is nearest the pixel block).
"""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_seg.chips.grid import ChipGrid
from multimodal_seg.errors import ParameterError

# (shape, size, stride): divisible and non-divisible lengths, overlap and none,
# an image exactly one chip wide, and very uneven aspect ratios.
GRIDS = [
    ((64, 64), 16, 16),
    ((64, 64), 16, 8),
    ((65, 71), 16, 8),
    ((100, 37), 16, 5),
    ((33, 47), 8, 3),
    ((32, 32), 32, 32),
    ((32, 90), 32, 7),
    ((17, 200), 17, 1),
    ((50, 50), 4, 4),
    ((129, 130), 64, 32),
    ((45, 38), 10, 3),
]


def _coverage(grid: ChipGrid) -> np.ndarray:
    """Number of chips covering each pixel, counted chip by chip from the origins."""
    cover = np.zeros(grid.shape, dtype=np.int64)
    for r0, c0 in grid.origins:
        cover[r0 : r0 + grid.size, c0 : c0 + grid.size] += 1
    return cover


def _brute_votes(grid: ChipGrid, chip_labels: np.ndarray) -> np.ndarray:
    """``(n_labels, rows, cols)``: chips of each label covering each pixel."""
    n_labels = max(int(chip_labels.max()) + 1, 1)
    votes = np.zeros((n_labels, *grid.shape), dtype=np.int64)
    for (r0, c0), label in zip(grid.origins, chip_labels.ravel()):
        if label >= 0:
            votes[label, r0 : r0 + grid.size, c0 : c0 + grid.size] += 1
    return votes


def _block_centre(starts: np.ndarray, size: int, length: int, x: int) -> float:
    """Centre of the run of pixels around ``x`` covered by exactly the same chips as ``x`` and
    on the same side of every chip centre and of every midpoint between neighbouring centres
    (whole pixels), so that the chips covering it are not all equally near its centre."""
    centres = starts + size // 2
    cuts = np.concatenate([centres, (centres[:-1] + centres[1:]) // 2])

    def covering(y: int) -> tuple:
        chips = frozenset(np.flatnonzero((starts <= y) & (y < starts + size)).tolist())
        return chips, tuple(y >= cuts)

    here = covering(x)
    lo = hi = x
    while lo > 0 and covering(lo - 1) == here:
        lo -= 1
    while hi < length - 1 and covering(hi + 1) == here:
        hi += 1
    return (lo + hi + 1) / 2


def _tie_winners(grid: ChipGrid, chip_labels: np.ndarray, tied_labels, r: int, c: int) -> set:
    """Among ``tied_labels``, those owning a chip whose centre is nearest the pixel's block."""
    br = _block_centre(grid.row_starts, grid.size, grid.shape[0], r)
    bc = _block_centre(grid.col_starts, grid.size, grid.shape[1], c)
    nearest: dict[int, float] = {}
    for (r0, c0), label in zip(grid.origins, chip_labels.ravel()):
        if label in tied_labels and r0 <= r < r0 + grid.size and c0 <= c < c0 + grid.size:
            d = float(np.hypot(br - r0 - grid.size / 2, bc - c0 - grid.size / 2))
            nearest[int(label)] = min(nearest.get(int(label), np.inf), d)
    best = min(nearest.values())
    return {label for label, d in nearest.items() if d <= best + 1e-9}


# --- geometry -------------------------------------------------------------------


@pytest.mark.parametrize("shape,size,stride", GRIDS)
def test_grid_covers_every_pixel_and_stays_inside(shape, size, stride):
    grid = ChipGrid(shape, size, stride)
    cover = _coverage(grid)
    assert cover.min() >= 1, "some pixel is covered by no chip"
    origins = grid.origins
    assert origins.min() >= 0
    assert (origins + size <= np.array(shape)).all(), "a chip sticks out of the image"
    # The last chip row/column ends exactly on the image edge.
    assert grid.row_starts[-1] + size == shape[0]
    assert grid.col_starts[-1] + size == shape[1]
    # Starts are strictly increasing, begin at 0, and step by `stride` except
    # possibly the last (edge) step, which is shorter.
    for starts in (grid.row_starts, grid.col_starts):
        assert starts[0] == 0
        steps = np.diff(starts)
        assert (steps > 0).all()
        assert (steps[:-1] == stride).all()
        if steps.size:
            assert steps[-1] <= stride


@pytest.mark.parametrize("shape,size,stride", GRIDS)
def test_grid_counts_and_row_major_origins(shape, size, stride):
    grid = ChipGrid(shape, size, stride)
    n_rows, n_cols = grid.grid_shape
    assert grid.n_chips == n_rows * n_cols == len(grid.origins)
    # Independent count: chips that fit at stride steps, plus one edge chip if needed.
    for length, n in ((shape[0], n_rows), (shape[1], n_cols)):
        fitted = (length - size) // stride + 1
        extra = int((fitted - 1) * stride + size < length)
        assert n == fitted + extra
    # Row-major: the column index runs fastest.
    expected = [(r, c) for r in grid.row_starts for c in grid.col_starts]
    assert [tuple(o) for o in grid.origins.tolist()] == expected


def test_divisible_grid_without_overlap_tiles_exactly():
    grid = ChipGrid((96, 64), 16, 16)
    assert grid.grid_shape == (6, 4)
    assert (_coverage(grid) == 1).all()


def test_non_divisible_grid_adds_one_edge_chip():
    grid = ChipGrid((70, 64), 16, 16)  # 70 = 4 * 16 + 6
    assert grid.row_starts.tolist() == [0, 16, 32, 48, 54]
    assert grid.col_starts.tolist() == [0, 16, 32, 48]


@pytest.mark.parametrize("size,stride,steps", [(32, 16, 1), (32, 32, 1), (43, 21, 1), (5, 2, 1), (32, 11, 1),
                                               (32, 8, 2), (32, 3, 5), (64, 8, 4), (3, 1, 2), (3, 3, 1), (1, 1, 1)])
def test_half_a_chip_in_grid_steps(size, stride, steps):
    # 1 at the default stride of half a chip (and any coarser one), whatever the chip's size,
    # but for 3 px chips every pixel (neighbours share two thirds): the decision tests every chip
    assert ChipGrid((128, 128), size, stride).half_chip_steps == steps


def test_to_dict_round_trip():
    grid = ChipGrid((65, 71), 16, 8)
    d = grid.to_dict()
    assert ChipGrid(tuple(d["shape"]), d["size"], d["stride"]) == grid


@pytest.mark.parametrize("shape,size,stride", [((65, 71), 16, 8), ((40, 37), 8, 3), ((32, 32), 32, 32)])
def test_extract_row_cuts_the_chips_at_the_origins(shape, size, stride):
    rng = np.random.default_rng(1)
    image = rng.random(shape).astype(np.float32)
    grid = ChipGrid(shape, size, stride)
    chips = np.concatenate([grid.extract_row(image[r : r + size]) for r in grid.row_starts])
    assert chips.shape == (grid.n_chips, size, size)
    for chip, (r0, c0) in zip(chips, grid.origins):
        np.testing.assert_array_equal(chip, image[r0 : r0 + size, c0 : c0 + size])


# --- back-projection ---------------------------------------------------------------


@pytest.mark.parametrize("shape,size,stride", GRIDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_back_projection_is_a_per_pixel_majority_vote(shape, size, stride, seed):
    rng = np.random.default_rng(seed)
    grid = ChipGrid(shape, size, stride)
    labels = rng.integers(0, 4, grid.grid_shape)
    pixels = grid.chip_labels_to_pixels(labels)
    assert pixels.shape == shape
    votes = _brute_votes(grid, labels)
    best = votes.max(axis=0)
    got = np.take_along_axis(votes, pixels[None], axis=0)[0]
    np.testing.assert_array_equal(got, best)  # the painted label always has the most votes
    unique = (votes == best).sum(axis=0) == 1
    np.testing.assert_array_equal(pixels[unique], votes.argmax(axis=0)[unique])


# Ties broken by the documented rule: "Ties go to the chip whose centre is nearest
# the pixel block" (blocks cut at chip centres and midpoints), on grids with even and
# uneven overlap.
@pytest.mark.parametrize("shape,size,stride", [((40, 37), 8, 4), ((33, 47), 8, 3), ((30, 29), 6, 5)])
def test_back_projection_ties_go_to_the_nearest_chip(shape, size, stride):
    _check_ties(shape, size, stride)


@pytest.mark.parametrize("shape,size,stride", [((45, 38), 10, 3), ((64, 64), 16, 4)])
def test_back_projection_ties_go_to_the_nearest_chip_uneven_overlap(shape, size, stride):
    _check_ties(shape, size, stride)


def _check_ties(shape, size, stride):
    rng = np.random.default_rng(0)
    grid = ChipGrid(shape, size, stride)
    labels = rng.integers(0, 3, grid.grid_shape)
    pixels = grid.chip_labels_to_pixels(labels)
    votes = _brute_votes(grid, labels)
    best = votes.max(axis=0)
    tied = (votes == best).sum(axis=0) > 1
    assert tied.any(), "test grid has no ties: it checks nothing"
    wrong = []
    for r, c in zip(*np.nonzero(tied)):
        winners = _tie_winners(grid, labels, set(np.flatnonzero(votes[:, r, c] == best[r, c])), r, c)
        if pixels[r, c] not in winners:
            wrong.append((r, c))
    assert not wrong, f"{len(wrong)} tied pixels not given to the nearest chip's label, e.g. {wrong[:3]}"


def test_back_projection_majority_holds_with_heavy_overlap():
    # 96 px chips at stride 1: the centre pixel is covered by 96 * 96 = 9216 chips.
    size, length = 96, 191
    grid = ChipGrid((length, length), size, 1)
    p = length // 2
    starts = grid.row_starts
    # Label every covering chip by the distance of its centre to the pixel: the
    # nearest 4607 chips get label 1, the rest label 0 (4609 chips), except the
    # farthest one, which gets label 2.  Label 0 wins 4608 to 4607.
    centre = starts + size / 2
    d = np.hypot((p + 0.5 - centre)[:, None], (p + 0.5 - centre)[None, :])
    covers = ((starts <= p) & (p < starts + size))
    inside = covers[:, None] & covers[None, :]
    assert inside.sum() == size * size
    order = np.argsort(np.where(inside, d, np.inf), axis=None, kind="stable")[: size * size]
    labels = np.zeros(grid.grid_shape, dtype=np.int64)
    labels.ravel()[order[: size * size // 2 - 1]] = 1
    labels.ravel()[order[-1]] = 2
    counts = np.bincount(labels[inside], minlength=3)
    assert counts.tolist() == [size * size // 2, size * size // 2 - 1, 1]
    assert grid.chip_labels_to_pixels(labels)[p, p] == 0


@pytest.mark.parametrize("shape,size", [((64, 64), 16), ((70, 53), 16), ((40, 40), 8)])
def test_stride_equal_size_paints_the_chip_map(shape, size):
    rng = np.random.default_rng(3)
    grid = ChipGrid(shape, size, size)
    labels = rng.integers(0, 5, grid.grid_shape)
    pixels = grid.chip_labels_to_pixels(labels)
    if shape[0] % size == 0 and shape[1] % size == 0:
        np.testing.assert_array_equal(pixels, np.kron(labels, np.ones((size, size), dtype=int)))
    # Non-divisible sizes: every pixel covered by one chip only takes that chip's label.
    cover = _coverage(grid)
    expected = np.full(shape, -1)
    for (r0, c0), label in zip(grid.origins, labels.ravel()):
        expected[r0 : r0 + size, c0 : c0 + size] = label  # later (edge) chips overwrite
    single = cover == 1
    np.testing.assert_array_equal(pixels[single], expected[single])


def test_uniform_labels_paint_uniformly():
    grid = ChipGrid((65, 71), 16, 5)
    pixels = grid.chip_labels_to_pixels(np.full(grid.grid_shape, 3))
    assert (pixels == 3).all()


def test_unlabelled_chips_leave_uncovered_pixels_unlabelled():
    grid = ChipGrid((64, 64), 16, 8)
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, grid.grid_shape)
    labels[rng.random(grid.grid_shape) < 0.4] = -1
    labels[0, 0] = -1
    pixels = grid.chip_labels_to_pixels(labels)
    labelled_cover = _brute_votes(grid, labels).sum(axis=0)
    np.testing.assert_array_equal(pixels < 0, labelled_cover == 0)
    assert (pixels[:8, :8] == -1).all()  # covered only by the unlabelled corner chip
    assert (pixels[pixels >= 0] < 3).all()


def test_all_unlabelled_chips_give_all_unlabelled_pixels():
    grid = ChipGrid((40, 40), 8, 4)
    assert (grid.chip_labels_to_pixels(np.full(grid.grid_shape, -1)) == -1).all()


def test_back_projection_rejects_wrong_label_shape():
    grid = ChipGrid((64, 64), 16, 8)
    with pytest.raises(ValueError):
        grid.chip_labels_to_pixels(np.zeros((3, 3), dtype=int))


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,size,stride,where",
    [
        ((30, 64), 32, 16, "chip_size"),  # chip taller than the image
        ((64, 30), 32, 16, "chip_size"),  # chip wider than the image
        ((64, 64), 16, 17, "stride"),  # gaps between chips
        ((64, 64), 0, 1, "chip_size"),  # no pixels at all
        ((64, 64), 16, 0, "stride"),
        ((64, 64), 16, -2, "stride"),
    ],
)
def test_invalid_grids_raise_parameter_errors(shape, size, stride, where):
    with pytest.raises(ParameterError) as info:
        ChipGrid(shape, size, stride)
    assert info.value.where == where
    assert info.value.fix


def test_smallest_valid_grid():
    grid = ChipGrid((4, 4), 4, 1)
    assert grid.grid_shape == (1, 1)
    assert (grid.chip_labels_to_pixels(np.array([[2]])) == 2).all()


def test_one_pixel_chips_paint_exactly_their_labels():
    # Spectrum images are segmented per scan position: chips of one pixel.
    labels = np.random.default_rng(1).integers(0, 4, (5, 7))
    grid = ChipGrid((5, 7), 1, 1)
    np.testing.assert_array_equal(grid.chip_labels_to_pixels(labels), labels)


def test_pixel_labels_to_chips_takes_each_chips_majority():
    labels = np.zeros((8, 8), dtype=np.int64)
    labels[:, 5:] = 1  # columns 5-7: chip at column 4 holds 1 of 4 columns of label 1
    labels[0, 0] = -1  # unlabelled pixels do not vote
    grid = ChipGrid((8, 8), 4, 2)
    chips = grid.pixel_labels_to_chips(labels)
    assert chips.shape == grid.grid_shape == (3, 3)
    np.testing.assert_array_equal(chips, [[0, 0, 1]] * 3)  # columns 0-3, 2-5 (1 of 4 is label 1), 4-7
    assert (grid.pixel_labels_to_chips(np.full((8, 8), -1)) == -1).all()
    with pytest.raises(ValueError, match="expected"):
        grid.pixel_labels_to_chips(labels[:4])


def test_chip_majority_round_trip_is_the_chip_level_ceiling():
    """Painting the chip-level truth back loses only pixels near boundaries."""
    truth = np.zeros((64, 64), dtype=np.int64)
    truth[:, 31:] = 1  # a boundary off the grid's 2-px sub-blocks
    grid = ChipGrid(truth.shape, 8, 4)
    painted = grid.chip_labels_to_pixels(grid.pixel_labels_to_chips(truth))
    wrong = painted != truth
    assert wrong.any() and not wrong[:, :27].any() and not wrong[:, 35:].any()


@pytest.mark.parametrize("shape, size, stride", [((300, 257), 32, 16), ((101, 90), 10, 7)])
def test_chip_labels_painted_on_some_pixels_are_the_whole_map_there(shape, size, stride):
    grid = ChipGrid(shape, size, stride)
    labels = np.random.default_rng(0).integers(-1, 5, grid.grid_shape)
    whole = grid.chip_labels_to_pixels(labels)
    rows, cols = np.arange(2, shape[0], 4), np.arange(1, shape[1], 3)
    np.testing.assert_array_equal(grid.chip_labels_to_pixels(labels, rows=rows, cols=cols), whole[np.ix_(rows, cols)])
    np.testing.assert_array_equal(grid.chip_labels_to_pixels(labels, rows=rows), whole[rows])


class _RecordingArray:
    """An array that remembers which rows each read asked for."""

    def __init__(self, data):
        self.data, self.reads = data, []
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]


def test_iter_chips_reads_narrow_bands_for_scattered_chips_of_a_large_array():
    from multimodal_seg.chips.grid import iter_chips

    data = np.arange(64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)
    grid = ChipGrid((64, 64), 8, 4)
    picked = np.sort(np.random.default_rng(0).choice(grid.n_chips, 20, replace=False))
    expected = np.stack([data[r : r + 8, c : c + 8] for r, c in grid.origins[picked]])
    row_bytes = 64 * 3 * 4
    # an array "large" for the band budget (4 rows' worth): bands of two chip heights at most
    recorder = _RecordingArray(data)
    chips = np.concatenate([b for _, b in iter_chips(recorder, grid.origins[picked], 8, batch=256,
                                                     band_bytes=4 * row_bytes)])
    np.testing.assert_array_equal(chips, expected)
    assert len(recorder.reads) > 1
    assert all(rows.stop - rows.start <= 16 for rows, _ in recorder.reads)
    # A full grid in row-major order is still read in few, wide bands.
    recorder.reads.clear()
    list(iter_chips(recorder, grid.origins, 8, batch=256, band_bytes=4 * row_bytes))
    assert len(recorder.reads) <= 2 * grid.grid_shape[0]
    # within the budget, the same chips come from one read
    recorder.reads.clear()
    chips = np.concatenate([b for _, b in iter_chips(recorder, grid.origins[picked], 8, batch=256,
                                                     band_bytes=64 * row_bytes)])
    np.testing.assert_array_equal(chips, expected)
    assert len(recorder.reads) == 1


def test_counts_per_position_reads_a_few_whole_rows_of_a_large_scan():
    import dask.array as da

    from multimodal_seg.chips.sizing import counts_per_position
    from multimodal_seg.modalities.base import Axis, ModalityData

    rows, cols = 300, 200
    # counts rise along the rows (a thickness wedge) and vary along the columns
    mean = np.add.outer(np.linspace(50, 150, rows), 20 * np.sin(np.arange(cols) / 7))
    counts = np.random.default_rng(0).poisson(mean[..., None] / 4, size=(rows, cols, 4)).astype(np.float32)
    read = []

    def record(block, block_info=None):
        read.append(block_info[0]["chunk-location"][0])
        return block

    data = da.from_array(counts, chunks=(2, cols, 4)).map_blocks(record, dtype=np.float32)
    axes = [Axis("y", rows, 1.0, 0.0, "nm"), Axis("x", cols, 1.0, 0.0, "nm"), Axis("E", 4, 1.0, 0.0, "eV")]
    modality = ModalityData(name="eds", kind="spectrum", data=data, axes=axes, source="<array>", metadata={})
    estimate = counts_per_position(modality, sample=4096)
    assert abs(estimate - counts.sum(axis=2).mean()) < 0.01 * counts.sum(axis=2).mean()
    assert len(set(read)) <= -(-4096 // cols)  # 21 rows of 300: at most 21 of the 150 chunks


@pytest.mark.parametrize(
    ("value", "units", "expected"),
    [
        ("32", "px", 32),
        ("32 px", "nm", 32),  # "px" is this data's pixel, not pint's CSS pixel (1/96 inch)
        ("2 nm", "nm", 4),  # pixel size 0.5 nm
        ("0.004 µm", "nm", 8),
    ],
)
def test_chip_lengths_in_pixels(value, units, expected):
    from multimodal_seg.chips.sizing import length_in_pixels
    from multimodal_seg.modalities.base import Axis

    axis = Axis("x", 256, scale=0.5 if units == "nm" else 1.0, units=units)
    assert length_in_pixels(value, axis, "chip_size") == expected


@pytest.mark.parametrize(
    ("value", "units", "needle"),
    [
        ("-8", "px", "not positive"),
        ("-2 nm", "nm", "not positive"),
        ("1 cm", "px", "no length calibration"),  # pint would have made it 38 CSS pixels
        ("0.2 nm", "nm", "below one pixel"),
        ("2 eV", "nm", "cannot be converted"),
        ("two", "px", "not a length"),
    ],
)
def test_chip_lengths_that_are_not_sizes_are_refused(value, units, needle):
    from multimodal_seg.chips.sizing import length_in_pixels
    from multimodal_seg.modalities.base import Axis

    axis = Axis("x", 256, scale=0.5 if units == "nm" else 1.0, units=units)
    with pytest.raises(ParameterError, match=needle) as caught:
        length_in_pixels(value, axis, "chip_size")
    text = str(caught.value)
    assert text.count("chip_size") == 2 and "fix:" in text  # where, and the fix; not repeated
