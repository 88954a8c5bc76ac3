"""The defects of the fault trials (issue 35; ../shared/trials/report.md), one test per trial id.

Each test fails on the code the trials ran against and passes once its defect
is fixed. They use real files: the tests/data fixtures, the bundled pilot
sample, bigWigs written with pybigtools and text formats written by hand.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from epitensor._utils import EpitensorError, atomic_directory
from epitensor.cli import app
from epitensor.store.compendium import Store

COOLBOX = "coolbox/bigwig_chr9_4000000_6000000_K562_{}.bigwig"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _manifest(folder, rows, name="manifest.tsv"):
    path = folder / name
    lines = ["celltype\tassay\tpath"] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _bed(folder, regions, name="regions.bed"):
    path = folder / name
    path.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions))
    return path


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _ingest(manifest, out, *extra):
    return _run("ingest", manifest, "--out", out, "--quiet", "--workers", "1", *extra)


def _fails(result, *needles):
    """Exit 1 with one line 'error: ...' on stderr naming every needle: no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


# C. escape -----------------------------------------------------------------------------


def test_E1_lock_file_symlink_is_refused(tmp_path):
    """A symlink planted at an output's lock path is refused, and its target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT USER DATA\n")
    (tmp_path / ".m_sym.lock").symlink_to(victim)
    with pytest.raises(EpitensorError, match=r"\.m_sym\.lock is a symbolic link.*remove"):
        with atomic_directory(tmp_path / "m_sym"):
            pass
    assert victim.read_text() == "IMPORTANT USER DATA\n"
    assert not (tmp_path / "m_sym").exists()
    # the same through a real command, which takes this lock beside its output
    out = tmp_path / "s.zarr"
    (tmp_path / ".s.zarr.lock").symlink_to(victim)
    result = _ingest(_manifest(tmp_path, [("K562", "X", "nowhere.bw")]), out)
    _fails(result, ".s.zarr.lock", "symbolic link")
    assert victim.read_text() == "IMPORTANT USER DATA\n"


def test_E1_lock_file_hard_link_is_refused(tmp_path):
    """A hard link to another file at the lock path would be overwritten with the pid too."""
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT USER DATA\n")
    os.link(victim, tmp_path / ".m.lock")
    with pytest.raises(EpitensorError, match="hard link"):
        with atomic_directory(tmp_path / "m"):
            pass
    assert victim.read_text() == "IMPORTANT USER DATA\n"


# A. wrong results: ingest regions ---------------------------------------------------------


@pytest.mark.parametrize(
    "regions, needles",
    [
        ([("chr9", -10, 100)], ["line 1", "chr9 -10 100", "start below 0"]),
        (  # chr9 is 141,213,431 bp in hg19
            [("chr9", 4_000_000, 4_001_000), ("chr9", 141_213_000, 141_300_000)],
            ["line 2", "chr9 141213000 141300000", "past their chromosome's length"],
        ),
        (
            [("chr9", 4_001_000, 4_005_000), ("chr9", 4_003_000, 4_008_000)],
            ["line 1", "line 2", "overlap"],
        ),
        (
            [("chr9", 4_001_000, 4_005_000), ("chr9", 4_001_000, 4_005_000)],
            ["line 1", "line 2", "overlap"],
        ),
        (  # disjoint bases, one shared 25-bp bin (4,200,000-4,200,025)
            [("chr9", 4_000_000, 4_200_010), ("chr9", 4_200_015, 4_400_000)],
            ["line 1", "line 2", "share a 25-bp bin"],
        ),
    ],
    ids=["negative", "beyond", "overlap", "duplicate", "shared-bin"],
)
def test_W12_ingest_regions_outside_or_overlapping_are_refused(
    test_data, tmp_path, regions, needles
):
    """Each bad BED is one line naming the file and the bad lines; no store is written."""
    bed = _bed(tmp_path, regions)
    manifest = _manifest(tmp_path, [("K562", "H3K27ac", test_data / COOLBOX.format("H3K27ac"))])
    result = _ingest(manifest, tmp_path / "s.zarr", "--regions", bed)
    _fails(result, str(bed), *needles)
    assert not (tmp_path / "s.zarr").exists()
