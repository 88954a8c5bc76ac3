"""Fuzzing the manifest, bedGraph and wig readers with hypothesis (bounded, reproducible).

Whatever the bytes, a reader either returns finite values that the store's
float16 can hold (and, for bedGraph, the exact bin means of a per-base
reference) or raises :class:`EpitensorError`; any other exception fails.
"""

import gzip
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epitensor._utils import EpitensorError
from epitensor.genome.coordinates import Layout
from epitensor.io.manifest import read_manifest
from epitensor.io.names import is_valid_name
from epitensor.io.readers import read_track

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SIZES = pd.Series({"chr1": 1000, "chr2": 503}, name="length")
LAYOUT = Layout.from_chrom_sizes(SIZES)

_word = st.text(
    st.characters(codec="utf-8", exclude_characters="\n", max_codepoint=0x2FF), max_size=12
)
_chrom = st.sampled_from(["chr1", "chr2", "1", "chrZ", "chrUn_x", "chr1 ", ""])
_int = st.one_of(st.integers(-30, 1100), st.sampled_from([10**19, -(10**19)]))
_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(-1e3, 1e3),
    st.sampled_from([0.0, 1e300, -1e300, 3.5e38, 1e5]),
)
_value_text = st.one_of(_value.map(repr), st.sampled_from(["nan", "inf", "-inf", "abc", "1e", ""]))


def _write(folder: Path, text: str, name: str, gzipped: bool, cut: int) -> Path:
    data = text.encode("utf-8", "surrogatepass")
    if gzipped:
        data = gzip.compress(data, mtime=0)
    if cut:  # truncate: a partial download
        data = data[: max(0, len(data) - cut)]
    path = folder / (name + (".gz" if gzipped else ""))
    path.write_bytes(data)
    return path


def _read(path: Path, transform: str) -> list[tuple[str, np.ndarray]]:
    """read_track's output, or [] when it raised EpitensorError (anything else propagates)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(read_track(path, LAYOUT, SIZES, transform=transform))
    except EpitensorError as exc:
        assert "\n" not in str(exc)
        return []


def _check(pieces: list[tuple[str, np.ndarray]]) -> None:
    for axis, values in pieces:
        assert values.dtype == np.float32 and values.shape == (LAYOUT.axis_lengths[axis],)
        assert np.isfinite(values).all()
        with np.errstate(over="ignore"):
            assert np.isfinite(values.astype(np.float16)).all()  # what the store will hold


# manifest ---------------------------------------------------------------------------------

_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,8}", fullmatch=True)
_bad_name = st.sampled_from(['K5"62', "a:b", "a/b", "", " ", "-x", ".x", "é", "a\x0bb", "x" * 101])
_row = st.tuples(_name, _name, _name.map(lambda n: n + ".bw"))
_MUTATIONS = [
    "extra field",
    "missing field",
    "bad celltype",
    "bad assay",
    "duplicate",
    "bad scale",
    "bad md5",
    "trailing tab",
    "blank line",
    "binary",
    "bom",
]


def _put(row: list, index: int, value: str) -> None:
    if index < len(row):
        row[index] = value


@FUZZ
@given(
    rows=st.lists(_row, min_size=1, max_size=5, unique_by=lambda r: (r[0], r[1])),
    extra_columns=st.lists(st.sampled_from(["md5", "scale", "notes"]), unique=True),
    mutations=st.lists(st.tuples(st.sampled_from(_MUTATIONS), st.integers(0, 4), _bad_name)),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_fuzz_manifest(rows, extra_columns, mutations, line_end):
    header = ["celltype", "assay", "path", *extra_columns]
    fill = {"md5": "", "scale": "raw", "notes": "n"}
    table = [list(row) + [fill[c] for c in extra_columns] for row in rows]
    head, tail = "", b""
    for kind, index, bad in mutations:
        row = table[index % len(table)]
        if kind == "extra field":
            row.append("x")
        elif kind == "missing field" and row:
            row.pop()
        elif kind == "bad celltype":
            _put(row, 0, bad)
        elif kind == "bad assay":
            _put(row, 1, bad)
        elif kind == "duplicate":
            table.append(list(row))
        elif kind == "bad scale" and "scale" in extra_columns:
            _put(row, header.index("scale"), "log")
        elif kind == "bad md5" and "md5" in extra_columns:
            _put(row, header.index("md5"), "xyz")
        elif kind == "trailing tab":
            row.append("")
        elif kind == "blank line":
            table.insert(index % len(table), [])
        elif kind == "binary":
            tail = b"\xff\xfe\x00"
        elif kind == "bom":
            head = "\ufeff"
    text = head + line_end.join("\t".join(r) for r in [header, *table]) + line_end
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.tsv"
        path.write_bytes(text.encode("utf-8") + tail)
        try:
            specs = read_manifest(path)
        except EpitensorError as exc:
            assert "\n" not in str(exc)
            assert mutations, exc  # a clean manifest always reads
            return
    data_rows = [r for r in table if r]
    assert len(specs) == len(data_rows)
    for spec, row in zip(specs, data_rows):
        assert (spec.celltype, spec.assay) == (row[0], row[1])
        assert is_valid_name(spec.celltype) and is_valid_name(spec.assay)
        assert spec.path == str(Path(folder) / row[2]) and spec.scale in ("raw", "arcsinh")


# bedGraph ---------------------------------------------------------------------------------


def _per_base(records) -> dict[str, np.ndarray]:
    """Bin means of (chrom, start, end, value) records by a per-base array (uncovered = 0)."""
    out = {}
    for chrom in SIZES.index:
        n = LAYOUT.axis_lengths[chrom]
        bases = np.zeros(n * 25)
        for c, start, end, value in records:
            if c == chrom:
                bases[start:end] = value if np.isfinite(value) else 0.0
        out[chrom] = bases.reshape(n, 25).mean(axis=1)
    return out


@st.composite
def _intervals(draw, chrom: str):
    """Sorted, non-overlapping records on ``chrom``, with gaps, inside its length."""
    edges = sorted(draw(st.lists(st.integers(0, int(SIZES[chrom])), unique=True, max_size=12)))
    pairs = list(zip(edges[0::2], edges[1::2]))
    values = draw(st.lists(_value, min_size=len(pairs), max_size=len(pairs)))
    return [(chrom, s, e, v) for (s, e), v in zip(pairs, values)]


_value_ok = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, float("nan"), float("inf")]))
_BG_MUTATIONS = [
    "overlap",
    "huge",
    "bad chrom",
    "negative",
    "past end",
    "text value",
    "few columns",
    "header",
    "shuffle",
]


@FUZZ
@given(
    chr1=_intervals("chr1"),
    chr2=_intervals("chr2"),
    values=st.lists(_value_ok, min_size=12, max_size=12),
    mutations=st.lists(st.tuples(st.sampled_from(_BG_MUTATIONS), st.integers(0, 30), _value)),
    spaces=st.booleans(),
    gzipped=st.booleans(),
    cut=st.sampled_from([0, 0, 0, 0, 3]),
)
def test_fuzz_bedgraph(chr1, chr2, values, mutations, spaces, gzipped, cut):
    records = [(c, s, e, values[i % 12]) for i, (c, s, e, _) in enumerate(chr1 + chr2)]
    lines = [[c, str(s), str(e), repr(v)] for c, s, e, v in records]
    for kind, index, value in mutations:
        k = index % max(1, len(lines))
        if kind == "header":
            lines.insert(k, ["track type=bedGraph"] if index % 2 else ["#", "comment"])
            continue
        if kind == "shuffle":
            lines.reverse()
            continue
        if not lines or len(lines[k]) != 4 or lines[k][0].startswith(("#", "track")):
            continue
        row = lines[k]
        if kind == "overlap":
            lines.append([row[0], str(max(0, int(row[1]) - 1)), str(int(row[2]) + 1), row[3]])
        elif kind == "huge":
            row[3] = repr(value)
        elif kind == "bad chrom":
            row[0] = ["chrZ", "chrUn_x", "1", ""][index % 4]
        elif kind == "negative":
            row[1] = str(-index)
        elif kind == "past end":
            row[2] = str(int(SIZES.get(row[0], 1000)) + 1 + index)
        elif kind == "text value":
            row[3] = ["abc", "1e", "", "0x1"][index % 4]
        elif kind == "few columns":
            lines[k] = row[:3]
    sep = " " if spaces else "\t"
    with tempfile.TemporaryDirectory() as folder:
        text = "\n".join(sep.join(words) for words in lines) + "\n"
        path = _write(Path(folder), text, "t.bedGraph", gzipped, cut)
        pieces = _read(path, "none")
    _check(pieces)
    clean = all(kind in ("header", "shuffle") for kind, _, _ in mutations) and not cut
    signal = any(np.isfinite(v) and abs(v) > 1e-6 and e > s for _, s, e, v in records)
    if clean and signal:
        assert pieces, "a clean bedGraph with signal must read"
    if pieces and clean:
        expected = _per_base(records)
        for axis, got in pieces:
            np.testing.assert_allclose(got, expected[axis], rtol=1e-6, atol=1e-6)


# wig ----------------------------------------------------------------------------------------


@st.composite
def _wig_block(draw):
    chrom = draw(st.sampled_from(["chr1", "chr2"]))
    span = draw(st.integers(1, 30))
    values = draw(st.lists(_value_ok, min_size=1, max_size=6))
    if draw(st.booleans()):
        step = draw(st.integers(span, 60))
        start = draw(st.integers(1, int(SIZES[chrom]) - step * len(values) - span))
        head = f"fixedStep chrom={chrom} start={start} step={step} span={span}"
        return head, [repr(v) for v in values]
    gaps = draw(st.lists(st.integers(span, 60), min_size=len(values), max_size=len(values)))
    positions = 1 + np.cumsum(gaps) - gaps[0]
    return f"variableStep chrom={chrom} span={span}", [
        f"{p} {v!r}" for p, v in zip(positions, values) if p + span - 1 <= SIZES[chrom]
    ]


_WIG_MUTATIONS = [
    "step=0",
    "step=-5",
    "span=0",
    "start=0",
    "no chrom",
    "unknown field",
    "two numbers",
    "text value",
    "huge",
    "track line",
    "data first",
]


@FUZZ
@given(
    blocks=st.lists(_wig_block(), min_size=1, max_size=3),
    mutations=st.lists(st.tuples(st.sampled_from(_WIG_MUTATIONS), st.integers(0, 9), _value)),
    gzipped=st.booleans(),
)
def test_fuzz_wig(blocks, mutations, gzipped):
    blocks = [[head, list(data)] for head, data in blocks]
    for kind, index, value in mutations:
        block = blocks[index % len(blocks)]
        if kind.startswith(("step", "span", "start")):
            key = kind.split("=")[0]
            words = [w for w in block[0].split() if not w.startswith(key + "=")]
            block[0] = " ".join(words + [kind])
        elif kind == "no chrom":
            block[0] = " ".join(w for w in block[0].split() if not w.startswith("chrom="))
        elif kind == "unknown field":
            block[0] += " colour=red"
        elif kind == "two numbers" and block[1]:
            block[1][index % len(block[1])] += " 7"
        elif kind == "text value" and block[1]:
            block[1][index % len(block[1])] = "abc"
        elif kind == "huge" and block[1]:
            block[1][-1] = " ".join(block[1][-1].split()[:-1] + [repr(value)])
        elif kind == "track line":
            block[1].insert(index % (len(block[1]) + 1), "track name=x")
        elif kind == "data first":
            blocks.insert(0, ["#", ["1.5"]])
    lines = [line for head, data in blocks for line in [head, *data]]
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), "\n".join(lines) + "\n", "t.wig", gzipped, 0)
        pieces = _read(path, "arcsinh")
    _check(pieces)
