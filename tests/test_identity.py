"""Identity by content (issue 35, items 1-2): stores, models and their consumers.

Each ``test_W*`` is the trial of that id in the fault-trials report of issue 35
(kept with the project's issues, not in this repository), made small: stores of 4,000 positions of the real pilot tracks.
A *rotated* store holds the same track names on the same regions with other
values (track k's values under track k+1's name), a *shifted* one the same
values on regions moved by 2.5 kb (same axis name and length).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from epitensor._utils import EpitensorError, EpitensorWarning
from epitensor.estimators.avocado import Avocado
from epitensor.estimators.ensemble import training_compendium
from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.genome.pilot import pilot_layout
from epitensor.store.compendium import Store
from epitensor.store.datasets import roadmap_pilot_arrays
from epitensor.store.identity import StoreMismatch, check_coordinates, check_data, data_record

N = 4_000
CELLTYPES = ["E003", "E017", "E065"]
ASSAYS = ["H3K4me3", "H3K27me3", "H3K36me3"]
NAMES = [(c, a) for c in CELLTYPES for a in ASSAYS]
HOLDOUT = [("E003", "H3K4me3")]


def _layout(shift_bins: int = 0, n: int = N) -> Layout:
    first = pilot_layout().regions.iloc[0]
    start_bin = int(first.first_bin) + shift_bins
    regions = pd.DataFrame(
        {"axis": ["pilot"], "chrom": [first.chrom], "start": [start_bin * 25],
         "end": [(start_bin + n) * 25], "name": ["head"], "offset": [0],
         "first_bin": [start_bin], "n_bins": [n]}
    )  # fmt: skip
    return Layout(regions, {"pilot": n}, 25, "head")


def make_store(
    path, rotate: int = 0, shift_bins: int = 0, names=NAMES, n: int = N, **kwargs
) -> Store:
    """A store of ``names`` on ``n`` pilot positions (``rotate``: values of other tracks)."""
    arrays = roadmap_pilot_arrays()
    lo = shift_bins  # the sample starts at the first region: shifting reads further on
    store = Store.create(path, _layout(shift_bins, n), chrom_sizes("hg19"), genome="hg19",
                         overwrite=True, **kwargs)  # fmt: skip
    every = list(arrays)
    values = [arrays[every[(every.index(t) + rotate) % len(every)]][lo : lo + n] for t in names]
    store.add_tracks(list(names), {"pilot": np.stack(values)})
    return Store.open(path)


def tiny_model(**params) -> Avocado:
    defaults = dict(n_celltype_factors=4, n_assay_factors=4, n_25bp_factors=4, n_250bp_factors=2,
                    n_5kbp_factors=2, n_layers=1, n_nodes=16, n_epochs=1, n_genome_epochs=1,
                    batch_size=4096, seed=0, verbose=False)  # fmt: skip
    return Avocado(**{**defaults, **params})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The store a model is trained on, and its rotated and shifted look-alikes."""
    root = tmp_path_factory.mktemp("identity")
    return {
        "root": root,
        "train": make_store(root / "train.zarr"),
        "rotated": make_store(root / "other" / "train.zarr", rotate=1),
        "shifted": make_store(root / "shifted.zarr", shift_bins=100),
    }


@pytest.fixture(scope="module")
def model_dir(stores):
    path = stores["root"] / "model"
    tiny_model().fit(stores["train"], holdout=HOLDOUT).save(path)
    return path


# the store's identity -----------------------------------------------------------------------


def test_store_identity_by_content(stores, tmp_path):
    train, rotated, shifted = stores["train"], stores["rotated"], stores["shifted"]
    identity = train.identity()
    assert identity == Store.open(train.url).identity()  # stable on reopening
    copy = tmp_path / "copy.zarr"
    shutil.copytree(train.url, copy)
    assert Store.open(copy).identity()["digest"] == identity["digest"]  # a copy is the same data
    assert identity["url"] == str(Path(train.url).resolve())  # a hint, absolute
    # same names and layout, other values: other track digests
    assert rotated.identity()["coordinates"] == identity["coordinates"]
    assert rotated.identity()["tracks"]["E003:H3K4me3"] != identity["tracks"]["E003:H3K4me3"]
    assert rotated.identity()["digest"] != identity["digest"]
    # same axis name and length, regions moved by 2.5 kb: other coordinates
    assert shifted.layout.axis_lengths == train.layout.axis_lengths
    assert shifted.identity()["coordinates"] != identity["coordinates"]
    # appending keeps the old tracks' digests and the coordinates, and changes the digest
    grown = Store.open(copy, mode="r+")
    grown.add_track("E116", "H3K4me3", {"pilot": roadmap_pilot_arrays()[("E116", "H3K4me3")][:N]})
    after = Store.open(copy).identity()
    assert after["coordinates"] == identity["coordinates"]
    assert all(after["tracks"][k] == v for k, v in identity["tracks"].items())
    assert after["digest"] != identity["digest"]
    assert "identity   sha256:" in Store.open(copy).summary()


def test_store_identity_record_check(stores):
    record = data_record(stores["train"], NAMES)
    assert check_data(record, stores["train"], "m") is None
    with pytest.raises(
        StoreMismatch,
        match=r"other/train.zarr is not the data m was made from \(/\S+/identity\d*/train.zarr\)",
    ):
        check_data(record, stores["rotated"], "m")
    with pytest.raises(StoreMismatch, match="lies on other coordinates .*puts other bins"):
        check_coordinates(stores["train"].layout, stores["shifted"], "m")
    check_coordinates(stores["train"].layout, stores["rotated"], "m")
    # a store holding a prefix of the axis is on the same coordinates, and cannot be compared
    prefix = make_store(stores["root"] / "prefix.zarr", rotate=1, n=1000)
    check_coordinates(stores["train"].layout, prefix, "m")
    assert check_data(record, prefix, "m") is None
    with pytest.warns(EpitensorWarning, match="used anyway"):
        note = check_data(record, stores["rotated"], "m", allow_changed=True)
    assert "hold other values" in note
    assert check_data(None, stores["rotated"], "m") is None  # an earlier version's record


def test_store_without_digests_opens_and_is_not_checked(stores, tmp_path):
    """A store written before digests: opens, appends, and its old tracks cannot be compared."""
    path = tmp_path / "old.zarr"
    shutil.copytree(stores["train"].url, path)
    attrs_file = path / "zarr.json"
    meta = json.loads(attrs_file.read_text())
    del meta["attributes"]["track_digests"], meta["attributes"]["chunk_crc32c"]
    attrs_file.write_text(json.dumps(meta))
    old = Store.open(path, mode="r+")
    assert set(old.track_digests().values()) == {None}
    assert check_data(data_record(stores["train"], NAMES), old, "m") is None
    old.add_track("E116", "H3K4me3", {"pilot": roadmap_pilot_arrays()[("E116", "H3K4me3")][:N]})
    digests = Store.open(path).track_digests()
    assert digests[("E003", "H3K4me3")] is None and digests[("E116", "H3K4me3")] is not None


# W7: a chunk's checksum binds its position ---------------------------------------------------


def test_W7_swapped_chunk_files_are_refused(tmp_path):
    store = make_store(tmp_path / "s.zarr", position_chunk=1000)
    folder = tmp_path / "s.zarr" / "signal" / "pilot" / "c" / "0"
    before = store.read_block("pilot", 0, N)
    os.replace(folder / "1", folder / "t")
    os.replace(folder / "2", folder / "1")
    os.replace(folder / "t", folder / "2")
    check = Store.open(tmp_path / "s.zarr").verify(verbose=False)
    assert not check.ok
    assert sum("moved or replaced" in c for c in check.corrupt) == 2
    with pytest.raises(EpitensorError, match="chunk c/0/1 .*moved or replaced"):
        Store.open(tmp_path / "s.zarr").read_block("pilot", 1000, 2000)
    with pytest.raises(EpitensorError, match="moved or replaced"):
        Store.open(tmp_path / "s.zarr").read_track("E017", "H3K27me3")
    # chunks elsewhere still read, and swapping back restores the store
    np.testing.assert_array_equal(Store.open(tmp_path / "s.zarr").read_block("pilot", 0, 1000),
                                  before[:, :1000])  # fmt: skip
    os.replace(folder / "1", folder / "t")
    os.replace(folder / "2", folder / "1")
    os.replace(folder / "t", folder / "2")
    assert Store.open(tmp_path / "s.zarr").verify(verbose=False).ok


def test_W7_append_keeps_the_chunk_table_current(tmp_path):
    """Appending rewrites chunks shared with old rows: the table follows, reads stay clean."""
    store = make_store(tmp_path / "s.zarr", names=NAMES[:4], position_chunk=1000)
    store = Store.open(tmp_path / "s.zarr", mode="r+")
    arrays = roadmap_pilot_arrays()
    store.add_track(*NAMES[4], {"pilot": arrays[NAMES[4]][:N]})
    reader = Store.open(tmp_path / "s.zarr")
    assert reader.verify(verbose=False).ok
    reader.read_block("pilot")
    # a reader opened before another append still reads (it re-reads the table once)
    store.add_tracks(NAMES[5:7], {"pilot": np.stack([arrays[n][:N] for n in NAMES[5:7]])})
    reader.read_block("pilot", tracks=[0, 1])
    store.truncate_tracks(5)
    assert Store.open(tmp_path / "s.zarr").verify(verbose=False).ok


def test_info_check_recomputes_the_track_digests(tmp_path):
    """Values rewritten behind epitensor's back with the chunk table kept consistent: caught."""
    from typer.testing import CliRunner

    from epitensor.cli import app

    path = tmp_path / "s.zarr"
    make_store(path, position_chunk=1000)
    check = Store.open(path).verify(verbose=False)
    assert check.ok and check.n_digests == len(NAMES)
    assert (
        f"digests    {len(NAMES)} track digests recomputed, {len(NAMES)} match" in check.summary()
    )
    # another writer (zarr itself) changes ten values of track 1 and records the chunks' new CRCs
    store = Store.open(path, mode="r+")
    store._group["signal"]["pilot"][1, 0:10] = np.arange(10, dtype=np.float32)
    store._group.attrs["chunk_crc32c"] = store._chunk_table(0, store.n_tracks)
    check = Store.open(path).verify(verbose=False)
    assert not check.ok and not check.corrupt and not check.missing
    assert len(check.changed) == 1 and "E003:H3K27me3 on axis 'pilot'" in check.changed[0]
    result = CliRunner().invoke(app, ["info", str(path), "--check", "-q"])
    assert result.exit_code == 1
    assert "1 tracks hold other values than when written" in result.output
    assert "0 corrupt chunks and 1 changed tracks" in result.output
    # digests edited in zarr.json (two tracks' swapped): both caught
    meta = json.loads((path / "zarr.json").read_text())
    digests = meta["attributes"]["track_digests"]
    digests[3], digests[4] = digests[4], digests[3]
    (path / "zarr.json").write_text(json.dumps(meta))
    assert len(Store.open(path).verify(verbose=False).changed) == 3


# W2, W3, W4: consumers check the data by content --------------------------------------------


def test_W2_training_store_is_absolute_and_checked_by_content(stores, tmp_path, monkeypatch):
    """Trained as a relative path; run from a folder holding another store of that name."""
    from epitensor.workflows.impute import impute

    work = tmp_path / "work"
    make_store(work / "toy.zarr")
    monkeypatch.chdir(work)
    model = tiny_model().fit("toy.zarr", holdout=HOLDOUT)
    assert model.training_store_ == str((work / "toy.zarr").resolve())
    model.save(work / "m")
    elsewhere = tmp_path / "elsewhere"
    make_store(elsewhere / "toy.zarr", rotate=1)
    monkeypatch.chdir(elsewhere)
    loaded = Avocado.load(work / "m")
    assert loaded.training_store_ == str((work / "toy.zarr").resolve())  # not ./toy.zarr
    # the recorded store moved away and another of the same name put there: refused, by content
    shutil.rmtree(work / "toy.zarr")
    shutil.copytree(elsewhere / "toy.zarr", work / "toy.zarr")
    with pytest.raises(StoreMismatch, match="was made from"):
        impute(work / "m", [("E003", "H3K4me3")], tmp_path / "out", trees_store="auto",
               verbose=False)  # fmt: skip
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_W3_store_changed_after_training_is_refused_or_allowed(stores, model_dir, tmp_path):
    from epitensor.estimators.ensemble import Ensemble

    path = tmp_path / "s.zarr"
    make_store(path)
    model = tiny_model().fit(path, holdout=HOLDOUT)
    make_store(path, rotate=1)  # re-ingested in place with other values
    with pytest.raises(StoreMismatch, match=r"s.zarr .*allow-changed-store"):
        training_compendium(model, model.training_store_)
    with pytest.warns(EpitensorWarning, match="used anyway"):
        training_compendium(model, model.training_store_, allow_changed=True)
    # the resume fingerprint of an imputation holds the data by content, so it changes too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EpitensorWarning)
        changed = Ensemble(model, path, allow_changed=True).fingerprint()
    make_store(path)
    same = Ensemble(model, path).fingerprint()
    assert changed["store"] == same["store"] and changed["data"] != same["data"]


def test_W3_appended_tracks_are_fine(tmp_path):
    path = tmp_path / "s.zarr"
    make_store(path, names=NAMES[:8])
    model = tiny_model().fit(path, holdout=HOLDOUT)
    Store.open(path, mode="r+").add_track(
        *NAMES[8], {"pilot": roadmap_pilot_arrays()[NAMES[8]][:N]}
    )
    assert training_compendium(model, model.training_store_).n_tracks == 9


def test_W4_other_coordinates_refused_by_every_command(stores, model_dir, tmp_path):
    """impute --trees, evaluate, extend and fit-genome with a shifted store of the same shape."""
    from epitensor.evaluation.benchmark import evaluate_model
    from epitensor.workflows.extend import extend
    from epitensor.workflows.impute import impute
    from epitensor.workflows.training import train_genome

    shifted = stores["shifted"]
    with pytest.raises(StoreMismatch, match="other coordinates"):
        impute(model_dir, [("E003", "H3K4me3")], tmp_path / "imp", trees_store=shifted.url,
               verbose=False)  # fmt: skip
    with pytest.raises(StoreMismatch, match="other coordinates"):
        evaluate_model(model_dir, shifted.url, [("E003", "H3K4me3")], tmp_path / "e.csv",
                       verbose=False)  # fmt: skip
    with pytest.raises(StoreMismatch, match="other coordinates"):
        train_genome(model_dir, shifted.url, tmp_path / "g", verbose=False)
    new = make_store(tmp_path / "new.zarr", shift_bins=100,
                     names=[("E116", a) for a in ASSAYS], rotate=0)  # fmt: skip
    with pytest.raises(StoreMismatch, match="other coordinates"):
        extend(model_dir, new.url, tmp_path / "x", celltypes=["E116"], verbose=False)
    for out in ("imp", "e.csv", "g", "x"):
        assert not (tmp_path / out).exists() or not any((tmp_path / out).iterdir())


def test_same_name_same_shape_other_values_refused_by_every_command(stores, model_dir, tmp_path):
    """impute (auto and --trees), evaluate, extend, fit-genome with the rotated store."""
    from epitensor.evaluation.benchmark import evaluate_model
    from epitensor.workflows.extend import extend
    from epitensor.workflows.impute import impute
    from epitensor.workflows.training import train_genome

    rotated = stores["rotated"]
    with pytest.raises(StoreMismatch, match="was made from"):
        impute(model_dir, [("E003", "H3K4me3")], tmp_path / "imp", trees_store=rotated.url,
               verbose=False)  # fmt: skip
    with pytest.raises(StoreMismatch, match="was made from"):
        evaluate_model(model_dir, rotated.url, [("E003", "H3K4me3")], tmp_path / "e.csv",
                       verbose=False)  # fmt: skip
    with pytest.raises(StoreMismatch, match="was made from"):
        train_genome(model_dir, rotated.url, tmp_path / "g", verbose=False)
    both = make_store(tmp_path / "both.zarr", rotate=1,
                      names=NAMES + [("E116", a) for a in ASSAYS])  # fmt: skip
    with pytest.raises(StoreMismatch, match="was made from"):
        extend(model_dir, both.url, tmp_path / "x", celltypes=["E116"], verbose=False)


def test_extend_records_the_new_data_and_the_allowed_change(stores, model_dir, tmp_path):
    both = make_store(tmp_path / "both.zarr", rotate=1,
                      names=NAMES + [("E116", a) for a in ASSAYS])  # fmt: skip
    with pytest.warns(EpitensorWarning, match="used anyway"):
        from epitensor.workflows.extend import extend

        extend(model_dir, both.url, tmp_path / "x", celltypes=["E116"], verbose=False,
               allow_changed=True)  # fmt: skip
    record = Avocado.load(tmp_path / "x").training_data_
    assert "E116:H3K4me3" in record["tracks"] and "E003:H3K27me3" in record["tracks"]
    assert len(record["warnings"]) == 1 and "hold other values" in record["warnings"][0]


# W5, W1: a model is one consistent snapshot --------------------------------------------------


def test_W5_hand_edited_config_is_refused(model_dir, tmp_path):
    for edit in ("swap", "weight"):
        path = tmp_path / edit
        shutil.copytree(model_dir, path)
        config = json.loads((path / "config.json").read_text())
        if edit == "swap":
            config["celltypes_"][0], config["celltypes_"][1] = (
                config["celltypes_"][1], config["celltypes_"][0])  # fmt: skip
        else:
            config["params"]["average_weight"] = 0.0
            config["module"]["average_weight"] = 0.0
        (path / "config.json").write_text(json.dumps(config))
        with pytest.raises(EpitensorError, match="config.json does not match the checksum"):
            Avocado.load(path)
    # the same text re-indented is the same config
    path = tmp_path / "reindented"
    shutil.copytree(model_dir, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config, indent=4))
    Avocado.load(path)


def test_W1_model_replaced_while_read_is_an_error(stores, tmp_path):
    """A model loaded (genome factors lazily), then its directory replaced by another model."""
    path = tmp_path / "m"
    tiny_model(seed=0).fit(stores["train"], holdout=HOLDOUT).save(path)
    other = tiny_model(seed=1).fit(stores["train"], holdout=HOLDOUT)
    loaded = Avocado.load(path)  # reads config.json and weights; the genome axis later
    other.save(path, overwrite=True)  # `train --overwrite` meanwhile
    with pytest.raises(EpitensorError, match=r"genome/pilot.safetensors does not match"):
        loaded.predict("E003", "H3K4me3")
    # a model loaded after the replacement is the new one, whole
    np.testing.assert_allclose(Avocado.load(path).predict("E003", "H3K4me3"),
                               other.predict("E003", "H3K4me3"), atol=1e-6)  # fmt: skip


def test_W1_fingerprints_use_the_checksums_pinned_at_load(stores, tmp_path):
    path = tmp_path / "m"
    tiny_model(seed=0).fit(stores["train"], holdout=HOLDOUT).save(path)
    loaded = Avocado.load(path)
    pinned = loaded.weights_checksum("pilot")
    tiny_model(seed=1).fit(stores["train"], holdout=HOLDOUT).save(path, overwrite=True)
    assert (
        loaded.weights_checksum("pilot") == pinned != Avocado.load(path).weights_checksum("pilot")
    )


def _python(code: str) -> subprocess.Popen:
    """A real second process running ``code`` with this worktree's epitensor."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def test_W1_overwrite_waits_for_a_reader_of_the_model(stores, tmp_path):
    """A model read (CLI impute holds the shared lock meanwhile): a writer replacing it waits."""
    from epitensor._utils import read_lock

    path = tmp_path / "m"
    tiny_model(seed=0).fit(stores["train"], holdout=HOLDOUT).save(path)
    before = (path / "config.json").read_bytes()
    writer = (
        "import sys\nfrom epitensor._utils import output_lock\n"
        f"with output_lock({str(path)!r}, timeout=0.5):\n    print('replaced')\n"
    )
    with read_lock(path):
        with read_lock(path):  # reentrant
            process = _python(writer)
            out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and "replaced" not in out
    assert "timed out after 0.5 s" in err and "writing or reading" in err
    assert (path / "config.json").read_bytes() == before
    assert not (tmp_path / ".m.lock").exists()  # the last reader removes the lock file
    # once read, the writer goes ahead at once
    process = _python(writer)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and "replaced" in out, err


def test_W1_model_being_written_is_a_one_line_error_for_a_reader(stores, model_dir, tmp_path):
    """`train --out M --overwrite` holds M's lock: impute and load fail at once, in one line."""
    from typer.testing import CliRunner

    from epitensor.cli import app

    holder = _python(
        "import sys\nfrom epitensor._utils import output_lock\n"
        f"with output_lock({str(model_dir)!r}):\n    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EpitensorError, match=rf"pid {holder.pid}\).*wait for it to finish"):
            Avocado.load(model_dir)
        args = ["impute", str(model_dir), "--celltype", "E003", "--assay", "H3K4me3",
                "--model-only", "--out", str(tmp_path / "a.bw"), "-q"]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        line = result.output.strip()
        assert "\n" not in line and "is being written by another epitensor process" in line
        assert not (tmp_path / "a.bw").exists()
    finally:
        holder.communicate("", timeout=60)
    assert CliRunner().invoke(app, args).exit_code == 0  # the writer done: the model reads


def test_W1_a_reader_cannot_write_what_it_reads(model_dir):
    from epitensor._utils import output_lock, read_lock

    with read_lock(model_dir), pytest.raises(EpitensorError, match="while this process is reading"):
        with output_lock(model_dir):
            pass
    with read_lock(model_dir / "absent" / "m") as held:  # nowhere to put a lock: unlocked
        assert held is None


# W6: train --resume on another store --------------------------------------------------------


def test_W6_resume_refuses_a_checkpoint_made_on_another_store(stores, tmp_path):
    checkpoints = tmp_path / "ck"
    tiny_model(n_epochs=2).fit(stores["train"], holdout=HOLDOUT, checkpoint_dir=checkpoints)
    assert (checkpoints / "checkpoint" / "state.json").is_file()
    with pytest.raises(EpitensorError, match="belongs to another run"):
        tiny_model(n_epochs=2).fit(stores["rotated"], holdout=HOLDOUT, checkpoint_dir=checkpoints,
                                   resume=True)  # fmt: skip
    # the same data at another path resumes
    copy = tmp_path / "copy.zarr"
    shutil.copytree(stores["train"].url, copy)
    tiny_model(n_epochs=2).fit(copy, holdout=HOLDOUT, checkpoint_dir=checkpoints, resume=True)


def test_model_records_the_data_and_old_models_load(model_dir, test_data):
    record = Avocado.load(model_dir).training_data_
    assert set(record) >= {"coordinates", "tracks", "digest", "url"}
    assert "E003:H3K4me3" in record["tracks"]  # the held-out track too
    old = Avocado.load(test_data / "saved-model-v1")
    assert old.training_data_ is None


# tune resume ---------------------------------------------------------------------------------


def test_W2_tune_resume_refuses_a_study_made_on_other_data(tmp_path, monkeypatch):
    """The same relative store name in another folder, other values: the study is not resumed."""
    from epitensor.evaluation.tune import tune

    space = {
        "n_celltype_factors": [4],
        "n_assay_factors": [4],
        "n_25bp_factors": [2],
        "n_250bp_factors": [4],
        "n_5kbp_factors": [4],
        "n_layers": [1],
        "n_nodes": [8],
    }
    kwargs = dict(holdout=HOLDOUT, space=space, positions=20_000, verbose=False)  # fmt: skip
    for folder, rotate in (("work", 0), ("elsewhere", 1)):
        make_store(tmp_path / folder / "toy.zarr", rotate=rotate, n=20_000)
    out = tmp_path / "study"
    monkeypatch.chdir(tmp_path / "work")
    tune("toy.zarr", out, n_trials=1, budget_minutes=0.001, **kwargs)
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(EpitensorError, match="made on other data"):
        tune("toy.zarr", out, n_trials=2, budget_minutes=0.001, **kwargs)
    # the same data elsewhere (moved or copied) resumes it
    shutil.rmtree("toy.zarr")
    shutil.copytree(tmp_path / "work" / "toy.zarr", "toy.zarr")
    assert len(tune("toy.zarr", out, n_trials=2, budget_minutes=0.001, **kwargs).trials) >= 1


# the command line ----------------------------------------------------------------------------


def test_cli_refuses_another_store_in_one_line_and_allows_it_when_asked(
    stores, model_dir, tmp_path
):
    from typer.testing import CliRunner

    from epitensor.cli import app

    runner = CliRunner()
    base = ["evaluate", str(model_dir), stores["rotated"].url, "--tracks", "E003:H3K4me3", "-q"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "a.csv")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip()
    assert "\n" not in line and "is not the data" in line and "--allow-changed-store" in line
    assert str(Path(stores["train"].url).resolve()) in line  # names both stores
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "b.csv"), "--allow-changed-store"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b.csv").is_file()
    args = ["impute", str(model_dir), "--celltype", "E003", "--assay", "H3K4me3", "--trees",
            stores["shifted"].url, "--out", str(tmp_path / "imp"), "-q"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "other coordinates" in result.output
    assert "Traceback" not in result.output


# every consumer, on the command line: a same-name, same-shape store of other values ----------


def _cli(*args):
    from typer.testing import CliRunner

    from epitensor.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line(result, *needles) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    line = result.output.strip()
    assert "\n" not in line, line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.mark.parametrize("command", ["impute --trees", "evaluate", "extend", "fit-genome"])
def test_cli_consumer_refuses_a_same_name_same_shape_store(command, stores, model_dir, tmp_path):
    """other/train.zarr: the training store's name, axes, regions and tracks; other values."""
    rotated = stores["rotated"].url
    args = {
        "impute --trees": ["impute", model_dir, "--celltype", "E003", "--assay", "H3K4me3",
                           "--trees", rotated, "--out", tmp_path / "o"],
        "evaluate": ["evaluate", model_dir, rotated, "--tracks", "E003:H3K4me3",
                     "--out", tmp_path / "o.csv"],
        "extend": ["extend", model_dir,
                   make_store(tmp_path / "other" / "train.zarr", rotate=1,
                              names=NAMES + [("E116", a) for a in ASSAYS]).url,
                   "--celltype", "E116", "--out", tmp_path / "o"],
        "fit-genome": ["fit-genome", model_dir, rotated, "--out", tmp_path / "o"],
    }[command]  # fmt: skip
    line = _one_line(_cli(*args, "-q"), "is not the data", "--allow-changed-store")
    assert str(Path(stores["train"].url).resolve()) in line  # names the store it was made from
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "other" not in p.parts]
    assert not written  # nothing written (an empty output folder at most)


def test_cli_impute_refuses_a_reingested_store_and_records_an_allowed_one(tmp_path):
    """W3 on the command line; with --allow-changed-store the warning stays in the records."""
    store = tmp_path / "toy.zarr"
    make_store(store)
    tiny_model().fit(store, holdout=HOLDOUT).save(tmp_path / "m")
    make_store(store, rotate=1)  # re-ingested in place: same name, shape and coordinates
    args = ["impute", tmp_path / "m", "--celltype", "E003", "--assay", "H3K4me3",
            "--celltype", "E017", "--assay", "H3K4me3", "--out", tmp_path / "imp", "-q"]  # fmt: skip
    _one_line(_cli(*args), "is not the data", "--allow-changed-store")
    assert not list(tmp_path.glob("imp/*.bigWig"))
    with pytest.warns(EpitensorWarning, match="used anyway"):
        result = _cli(*args, "--allow-changed-store")
    assert result.exit_code == 0, result.output
    params = json.loads((tmp_path / "imp" / "impute.json").read_text())
    assert len(params["warnings"]) == 1 and "hold other values" in params["warnings"][0]
    assert params["ensemble"]["warnings"] == params["warnings"]
    for path in params["files"]:  # each file's done record keeps it too
        record = json.loads((Path(path).parent / f".{Path(path).name}.done.json").read_text())
        assert record["fingerprint"]["ensemble"]["warnings"] == params["warnings"]
    stamps = {p: Path(p).stat().st_mtime_ns for p in params["files"]}
    with pytest.warns(EpitensorWarning, match="used anyway"):
        assert _cli(*args, "--allow-changed-store").exit_code == 0  # the same run: resumed
    assert {p: Path(p).stat().st_mtime_ns for p in params["files"]} == stamps
    make_store(store)  # the data it was made from, back: the files are not of this run
    _one_line(_cli(*args), "not a finished file of this imputation")


def test_cli_train_resume_refuses_a_checkpoint_made_on_another_store(stores, tmp_path):
    """W6 on the command line: same preset and holdout, the other store of the same shape."""
    preset = tmp_path / "p.json"
    params = tiny_model(n_epochs=2).get_params()
    preset.write_text(json.dumps({k: v for k, v in params.items()
                                  if k not in ("verbose", "device", "n_threads")}))  # fmt: skip
    out = tmp_path / "m"
    Avocado.from_preset(str(preset), verbose=False, device=None, n_threads=None).fit(
        stores["train"], holdout=HOLDOUT, checkpoint_dir=tmp_path / "m.checkpoint"
    )
    args = ["--out", out, "--preset", preset, "--holdout", "E003:H3K4me3", "--resume", "-q"]
    _one_line(_cli("train", stores["rotated"].url, *args), "belongs to another run")
    assert not out.exists()
    result = _cli("train", stores["train"].url, *args)  # the store it was made on resumes
    assert result.exit_code == 0, result.output
    assert Avocado.load(out).training_data_["digest"] == stores["train"].identity()["digest"]


def test_cli_tune_resume_refuses_a_study_made_on_other_data(tmp_path, monkeypatch):
    """W2 for tune on the command line: the same relative store name, run from another folder."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"n_celltype_factors": [4], "n_assay_factors": [4],
                                 "n_25bp_factors": [2], "n_250bp_factors": [4],
                                 "n_5kbp_factors": [4], "n_layers": [1], "n_nodes": [8]}))  # fmt: skip
    for folder, rotate in (("work", 0), ("elsewhere", 1)):
        make_store(tmp_path / folder / "toy.zarr", rotate=rotate, n=20_000)
    args = ["tune", "toy.zarr", "--out", tmp_path / "study", "--space", space, "--positions",
            20_000, "--budget", 0.01, "--holdout", "E003:H3K4me3", "-q"]  # fmt: skip
    monkeypatch.chdir(tmp_path / "work")
    result = _cli(*args, "--trials", 1)
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path / "elsewhere")
    _one_line(_cli(*args, "--trials", 2), "study.db holds a study made on other data")


# T2, T3: tune's study ---------------------------------------------------------------------------


def test_T2_a_second_tune_of_one_study_fails_at_once(tmp_path):
    from epitensor.evaluation.tune import tune

    study = tmp_path / "study"
    holder = _python(
        "import sys\nfrom epitensor._utils import output_lock\n"
        f"with output_lock({str(study)!r}):\n    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EpitensorError, match=rf"being written by another .*pid {holder.pid}"):
            tune(make_store(tmp_path / "s.zarr", n=20_000), study, n_trials=1, positions=20_000,
                 verbose=False)  # fmt: skip
    finally:
        holder.communicate("", timeout=60)
    assert not (study / "study.db").exists()


@pytest.mark.parametrize("content", [b"not a database\n", b"SQLite format 3\x00" + b"\x07" * 90])
def test_T3_a_damaged_study_file_is_one_line(content, tmp_path):
    from epitensor.evaluation.tune import tune

    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.db").write_bytes(content)
    with pytest.raises(EpitensorError, match=r"study.db is not a readable study \(.*move it away"):
        tune(make_store(tmp_path / "s.zarr", n=20_000), tmp_path / "study", n_trials=1,
             positions=20_000, verbose=False)  # fmt: skip


# L1: an interrupted append's snapshot and the store now at its path --------------------------


def _killed_append(store: Path) -> None:
    """A real process that snapshots ``store`` for an append and dies (kill -9) before the end."""
    code = (
        "import os\nfrom epitensor.io.fetch import RunScratch\n"
        f"scratch = RunScratch({str(store)!r}).__enter__()\nscratch.snapshot({str(store)!r})\n"
        "os._exit(137)\n"
    )
    process = _python(code)
    process.communicate(timeout=120)
    assert process.returncode == 137
    assert len(list(store.parent.glob(f".{store.name}.ingest-*/snapshot.txt"))) == 1


def test_L1_snapshot_is_not_restored_onto_another_store_at_its_path(tmp_path):
    from epitensor.io.fetch import RunScratch

    path = tmp_path / "S.zarr"
    make_store(path, names=NAMES[:2], n=1000)
    _killed_append(path)
    shutil.rmtree(path)
    make_store(path, names=NAMES[::-1], n=1000)  # the user puts another store (a backup) there
    with pytest.warns(EpitensorWarning, match=r"is not the store it was appending to"):
        with RunScratch(path):  # what the next `ingest --append` does first
            pass
    assert Store.open(path).n_tracks == len(NAMES)  # its 9 tracks kept, not the old 2
    aside = list(tmp_path.glob(".S.zarr.interrupted-append-*"))
    assert len(aside) == 1 and (aside[0] / "zarr.json").is_file()
    assert not list(tmp_path.glob(".S.zarr.ingest-*"))
    # removed after the kill and a new store ingested there: the deleted one never comes back
    shutil.rmtree(aside[0])
    _killed_append(path)
    shutil.rmtree(path)
    with pytest.warns(EpitensorWarning, match=r"is not the store"), RunScratch(path):
        pass
    assert not path.exists()


def test_L1_snapshot_is_restored_onto_the_store_it_was_taken_of(tmp_path):
    from epitensor.io.fetch import RunScratch

    path = tmp_path / "S.zarr"
    make_store(path, names=NAMES[:2], n=1000)
    _killed_append(path)
    Store.open(path, mode="r+").add_track(*NAMES[2], {"pilot": np.zeros(1000, np.float32)})
    with pytest.warns(EpitensorWarning, match="restored"), RunScratch(path):
        pass
    assert Store.open(path).n_tracks == 2
