"""Fuzzing the loading of store metadata: hand edits and damage to a small real store's JSON.

Each example deletes keys, changes their types or puts junk in the group
``zarr.json`` (the store's attributes), ``signal/zarr.json`` or an axis array's
``zarr.json`` of a copy of a store holding real pilot tracks, then opens,
summarises and reads it as ``epitensor info`` and training do. The only
exception allowed out is :class:`EpitensorError`, and nothing read may be NaN
or infinite.
"""

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from epitensor._utils import EpitensorError
from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.genome.pilot import pilot_layout
from epitensor.store.compendium import Store
from epitensor.store.datasets import roadmap_pilot_arrays

N_POSITIONS = 3_000
FILES = ["zarr.json", "zarr.json", "signal/zarr.json", "signal/pilot/zarr.json"]
JUNK = [None, True, 0, -1, 7, 2**63, 1.5, math.nan, math.inf, "", "x", "float64", [], [1], {}]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Five real pilot tracks over 3,000 positions, in chunks of 1,000 positions."""
    first = pilot_layout().regions.iloc[0]
    start = int(first.first_bin) * 25
    bed = pd.DataFrame(
        {"chrom": [first.chrom], "start": [start], "end": [start + 25 * N_POSITIONS]}
    )
    layout = Layout.from_bed(bed, name="pilot")
    path = tmp_path_factory.mktemp("fuzz") / "store.zarr"
    store = Store.create(path, layout, chrom_sizes("hg19"), genome="hg19", position_chunk=1000)
    arrays = list(roadmap_pilot_arrays().items())[:5]
    store.add_tracks(
        [name for name, _ in arrays],
        {"pilot": np.stack([values[:N_POSITIONS] for _, values in arrays])},
    )
    return path


def _paths(node, prefix=()) -> list[tuple]:
    """Every key path into ``node``; of a long mapping (chromosome sizes) only 3 entries."""
    if isinstance(node, dict):
        keys = list(node)[:3] if len(node) > 12 else list(node)
    elif isinstance(node, list):
        keys = list(range(len(node)))
    else:
        return []
    out = []
    for key in keys:
        out.append((*prefix, key))
        out += _paths(node[key], (*prefix, key))
    return out


@st.composite
def mutations(draw, document):
    """A path into ``document`` (keys and list indices, any depth) and what to do there."""
    paths = _paths(document)
    if not paths or draw(st.integers(0, 49)) == 0:  # now and then the whole file
        return [], "replace", draw(st.sampled_from(JUNK))
    path = list(draw(st.sampled_from(paths)))
    action = draw(st.sampled_from(["delete", "replace", "retype"]))
    return path, action, draw(st.sampled_from(JUNK))


def _apply(document, path, action, junk):
    junk = copy.deepcopy(junk)  # later edits must not change the shared JUNK values
    if not path:
        return junk
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = junk
    else:  # the same value as another JSON type
        value = parent[key]
        parent[key] = [value] if not isinstance(value, (str, list)) else str(len(value))
    return document


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_metadata_loads_cleanly_or_raises_epitensor_error(pristine, data):
    name = data.draw(st.sampled_from(FILES), label="file")  # zarr.json is twice as likely
    document = _load(pristine / name)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path, action, junk = data.draw(mutations(document), label="edit")
        document = _apply(document, path, action, junk)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "store.zarr"
        shutil.copytree(pristine, target)
        (target / name).write_text(json.dumps(document))
        try:
            store = Store.open(target)
            event("opened")
            store.summary()
            for axis in store.axes:
                block = store.read_block(axis)
                assert np.isfinite(block).all()
                if store.n_tracks:
                    row = store.read_track(*store.track_names()[0], axis=axis)
                    assert np.isfinite(row).all()
        except EpitensorError as exc:
            event(f"error: {str(exc).replace(str(target), 'STORE')[:60]}")
            assert "\n" not in str(exc)


def test_pristine_store_reads_back(pristine):
    """The fuzzed store itself is sound (so the fuzz tests damage, not a bad fixture)."""
    store = Store.open(pristine)
    assert store.n_tracks == 5 and store.has_checksums
    assert store.verify(verbose=False).ok
    assert np.isfinite(store.read_block("pilot")).all()
