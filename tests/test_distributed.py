"""Fan-out in-process and on a local Ray instance; stores on fsspec URLs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from epitensor._utils import EpitensorError
from epitensor.estimators.avocado import Avocado
from epitensor.genome.coordinates import Layout, chrom_sizes
from epitensor.parallel import TaskFailure, iter_tasks, run_tasks
from epitensor.store.compendium import Store


def _flaky(item: str, marker_dir: str, scale: int = 1) -> str:
    """Fails on its first attempt per item (a marker file remembers it); ``bad*`` always fails."""
    if item.startswith("bad"):
        raise ValueError(f"item {item} always fails")
    marker = Path(marker_dir) / f"{item}.tried"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"first attempt at {item} fails")
    return item * scale


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPUs, shared by this module's tests."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install epitensor[ray])")
    # Ray workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield "local"
    ray.shutdown()


def test_cli_fit_genome_ray_auto_without_a_cluster_writes_nothing(tmp_path):
    """`fit-genome --ray auto` with no cluster: one line, and no stage-1 model left at --out."""
    from typer.testing import CliRunner

    from epitensor.cli import app

    ray = pytest.importorskip("ray", reason="ray is not installed (pip install epitensor[ray])")
    if ray.is_initialized() or Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray instance is running here")
    store = _store_of_build(tmp_path / "store.zarr", "hg19")
    out = tmp_path / "fitted"
    result = CliRunner().invoke(
        app,
        [
            "fit-genome",
            str(SAVED_MODEL),
            store.url,
            "--out",
            str(out),
            "--ray",
            "auto",
            "--quiet",
        ],  # fmt: skip
    )
    assert result.exit_code == 1, result.output
    assert "cannot connect to Ray at 'auto'" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "store.zarr"]


# run_tasks ------------------------------------------------------------------------------------


def test_in_process_retries_and_keeps_order(tmp_path):
    out = run_tasks(
        _flaky, ["a", "b", "c"], shared={"marker_dir": str(tmp_path), "scale": 2}, verbose=False
    )
    assert out == ["aa", "bb", "cc"]


def test_in_process_reports_every_failed_item_by_name(tmp_path):
    with pytest.raises(TaskFailure) as info:
        run_tasks(
            _flaky,
            ["a", "bad1", "b", "bad2"],
            names=["chrA", "chrBad1", "chrB", "chrBad2"],
            shared={"marker_dir": str(tmp_path)},
            max_retries=1,
            verbose=False,
        )
    assert set(info.value.failures) == {"chrBad1", "chrBad2"}
    message = str(info.value)
    assert "2 of 4" in message and "chrBad1" in message and "chrBad2" in message
    assert "always fails" in message
    # without retries the first-attempt failures count too
    with pytest.raises(TaskFailure, match="chrC"):
        run_tasks(
            _flaky,
            ["c"],
            names=["chrC"],
            shared={"marker_dir": str(tmp_path / "x")},
            max_retries=0,
            verbose=False,
        )


def test_bad_arguments_raise():
    with pytest.raises(EpitensorError, match="names"):
        run_tasks(str, [1, 2], names=["one"], verbose=False)
    with pytest.raises(EpitensorError, match="max_retries"):
        run_tasks(str, [1], max_retries=-1, verbose=False)


def test_ray_retries_a_task_that_fails_once(ray_local, tmp_path):
    out = run_tasks(
        _flaky,
        ["a", "b"],
        ray_address=ray_local,
        shared={"marker_dir": str(tmp_path), "scale": 3},
        verbose=False,
    )
    assert out == ["aaa", "bbb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tried", "b.tried"]


def test_ray_reports_a_task_that_always_fails_by_name(ray_local, tmp_path):
    (tmp_path / "a.tried").touch()
    with pytest.raises(TaskFailure) as info:
        run_tasks(
            _flaky,
            ["a", "bad"],
            names=["chr1", "chr2"],
            ray_address=ray_local,
            shared={"marker_dir": str(tmp_path)},
            max_retries=1,
            verbose=False,
        )
    assert list(info.value.failures) == ["chr2"]
    assert "chr2 (ValueError: item bad always fails)" in str(info.value)
    assert "1 of 2" in str(info.value)


# stage 2 and imputation on real pilot data ----------------------------------------------------


def _genome_tables(model, axes):
    return {
        (axis, k): v.detach().clone()
        for axis in axes
        for k, v in model.genome_module(axis).state_dict().items()
    }


@pytest.fixture
def one_thread():
    """Torch on one thread (as in a 1-CPU Ray task), restored afterwards.

    Results are bit-identical across processes only at equal thread counts:
    a reduction split over 2 threads rounds differently (~3e-8) from one.
    """
    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def test_stage2_ray_equals_in_process(
    trained_model, by_chrom_store, ray_local, one_thread, tmp_path
):
    import copy

    from epitensor.estimators.stage2 import fit_genome

    def fresh():
        return copy.deepcopy(trained_model).set_params(n_threads=one_thread)

    axes = by_chrom_store.axes
    reference = fresh().fit_genome(by_chrom_store)
    local = fit_genome(fresh(), by_chrom_store)
    remote = fit_genome(fresh(), by_chrom_store, ray_address=ray_local)
    # with out=, each axis is written to the saved model as it comes back and freed
    released = {}
    for label, ray in (("released", None), ("released-ray", ray_local)):
        model = fresh()
        model.save(tmp_path / label)
        released[label] = fit_genome(model, by_chrom_store, ray_address=ray, out=tmp_path / label)
        assert not set(axes) & set(model.module_.genome)  # nothing left in memory
    method = fresh()
    method.save(tmp_path / "method")
    method.fit_genome(by_chrom_store, out=tmp_path / "method")
    assert not set(axes) & set(method.module_.genome)
    reloaded = Avocado.load(tmp_path / "released-ray")
    assert set(reloaded.genome_axes_) == {"pilot", *axes}
    expected = _genome_tables(reference, axes)
    for label, model in (
        ("in-process", local),
        ("ray", remote),
        *released.items(),
        ("method", method),
        ("reloaded", reloaded),
    ):
        got = _genome_tables(model, axes)
        assert got.keys() == expected.keys()
        for key in expected:
            assert torch.equal(got[key], expected[key]), (label, key)
        assert list(model.history_.stage[-3:]) == [f"genome:{a}" for a in axes]
    assert reloaded.layout_.to_dict() == reference.layout_.to_dict()
    # the factors were learned: they moved away from their uniform start
    start = fresh().module_.new_genome_factors(20_002)
    assert not torch.equal(expected[("chr1", "emb_25bp.weight")], start.emb_25bp.weight)


IMPUTE_CHROMS = ["chr1", "chr4", "chr8", "chr9"]  # 20,002 pilot positions each


def test_impute_ray_writes_the_files_of_export_impute(trained_model, ray_local, tmp_path):
    import pybigtools

    from epitensor.workflows.impute import impute

    tracks = [("E003", "H3K4me3"), ("E116", "H3K27me3"), ("E065", "H3K4me1")]
    trained_model.save(tmp_path / "model")
    local = impute(trained_model, tracks, tmp_path / "local", chroms=IMPUTE_CHROMS,
                          verbose=False)  # fmt: skip
    remote = impute(tmp_path / "model", tracks, tmp_path / "ray", chroms=IMPUTE_CHROMS,
                    ray_address=ray_local, verbose=False)  # fmt: skip
    assert [p.name for p in remote] == [p.name for p in local]
    for a, b in zip(local, remote):
        assert a.read_bytes() == b.read_bytes(), b.name
    records = list(pybigtools.open(str(remote[0])).records("chr4"))
    assert len(records) == 20_002 and np.var([r[2] for r in records]) > 0
    assert (tmp_path / "ray" / "impute.json").is_file()


def test_impute_ray_memory_store_is_refused(by_chrom_store, trained_model):
    from epitensor.parallel import remote_store

    assert remote_store(by_chrom_store, None) is by_chrom_store
    assert remote_store(by_chrom_store, "local") == by_chrom_store.url
    layout, sizes = _tiny_layout()
    memory = Store.create("memory://epitensor-test/refused.zarr", layout, sizes)
    with pytest.raises(EpitensorError, match="memory"):
        remote_store(memory, "local")


def test_ingest_ray_builds_the_store_of_in_process_ingest(test_data, ray_local, tmp_path):
    """Real K562 bigWigs (chr9:4-6 Mb): tracks read in Ray tasks, written here, same store."""
    from epitensor.store.ingest import ingest

    coolbox = test_data / "coolbox"
    rows = [
        ("K562", assay, coolbox / f"bigwig_chr9_4000000_6000000_K562_{assay}.bigwig")
        for assay in ("H3K27ac", "H3K27me3", "RNA")
    ]
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("celltype\tassay\tpath\n" + "".join(f"{c}\t{a}\t{p}\n" for c, a, p in rows))
    regions = tmp_path / "regions.bed"
    regions.write_text("chr9\t4000000\t4600000\nchr9\t5500000\t6000000\n")
    serial = ingest(manifest, tmp_path / "serial.zarr", regions=regions, workers=1, verbose=False)
    remote = ingest(manifest, tmp_path / "ray.zarr", regions=regions, ray_address=ray_local,
                    verbose=False)  # fmt: skip
    assert remote.track_names() == serial.track_names()
    assert list(remote.tracks.source) == list(serial.tracks.source)
    np.testing.assert_array_equal(remote.read_block("regions"), serial.read_block("regions"))
    assert remote.read_block("regions").std() > 0


def test_ingest_ray_names_the_broken_file(test_data, ray_local, tmp_path):
    from epitensor.store.ingest import ingest

    broken = tmp_path / "broken.bigwig"
    good = test_data / "coolbox" / "bigwig_chr9_4000000_6000000_K562_RNA.bigwig"
    broken.write_bytes(good.read_bytes()[:4000])  # header kept, data cut off
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(f"celltype\tassay\tpath\nK562\tRNA\t{broken}\n")
    regions = tmp_path / "regions.bed"
    regions.write_text("chr9\t4000000\t4600000\n")
    with pytest.raises(EpitensorError, match="broken.bigwig"):
        ingest(manifest, tmp_path / "s.zarr", regions=regions, ray_address=ray_local,
               verbose=False)  # fmt: skip
    assert not (tmp_path / "s.zarr").exists()


# stores anywhere --------------------------------------------------------------------------------


def _tiny_layout() -> tuple[Layout, object]:
    sizes = chrom_sizes("hg19")
    small = sizes[["chr21", "chr22"]] // 1000
    return Layout.from_chrom_sizes(small, chroms=["chr21", "chr22"]), sizes


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_store_round_trip_on_fsspec_urls(scheme, tmp_path):
    layout, sizes = _tiny_layout()
    url = (
        f"memory://epitensor-test/{tmp_path.name}/store.zarr"
        if scheme == "memory"
        else f"file://{tmp_path}/store.zarr"
    )
    rng = np.random.default_rng(0)
    values = {
        axis: np.arcsinh(rng.gamma(0.5, 2.0, size=n)).astype(np.float32)
        for axis, n in layout.axis_lengths.items()
    }
    store = Store.create(url, layout, sizes, genome="hg19")
    store.add_track("E003", "H3K4me3", values, source="synthetic")
    again = Store.open(url)
    assert again.track_names() == [("E003", "H3K4me3")]
    assert again.genome == "hg19" and again.layout.axis_lengths == layout.axis_lengths
    for axis, expected in values.items():
        got = again.read_track("E003", "H3K4me3", axis)
        np.testing.assert_allclose(got, expected, atol=5e-3)
        block = again.read_block(axis, 5, 105)
        np.testing.assert_array_equal(block[0], got[5:105])
    if scheme == "file":
        assert (tmp_path / "store.zarr" / "zarr.json").is_file()


def test_store_open_missing_memory_url_raises():
    with pytest.raises(EpitensorError, match="cannot open store"):
        Store.open("memory://epitensor-test/nothing-here.zarr")


def test_iter_tasks_streams_in_order_and_stops_at_a_failure(tmp_path):
    marker = {"marker_dir": str(tmp_path)}
    assert list(iter_tasks(_flaky, ["a", "b"], shared=marker, verbose=False)) == ["a", "b"]
    got = []
    with pytest.raises(TaskFailure, match=r"chr2 \(ValueError.*2 more not run"):
        for value in iter_tasks(
            _flaky,
            ["a", "bad", "c", "d"],
            names=["chr1", "chr2", "chr3", "chr4"],
            shared=marker,
            verbose=False,
        ):
            got.append(value)
    assert got == ["a"]
    assert not (tmp_path / "c.tried").exists()


def test_ray_iter_tasks_streams_in_order(ray_local, tmp_path):
    items = ["a", "b", "c", "d", "e"]
    out = iter_tasks(
        _flaky,
        items,
        ray_address=ray_local,
        shared={"marker_dir": str(tmp_path)},
        window=2,
        verbose=False,
    )
    assert list(out) == items
    for item in items:
        (tmp_path / f"{item}.tried").touch()
    got = []
    with pytest.raises(TaskFailure, match=r"1 of 5 tasks failed.*bad.*2 more not run"):
        for value in iter_tasks(_flaky, ["a", "bad", "c", "d", "e"], ray_address=ray_local,
                                shared={"marker_dir": str(tmp_path)}, max_retries=0, window=1,
                                verbose=False):  # fmt: skip
            got.append(value)
    assert got == ["a"]


@pytest.mark.parametrize("command", ["ingest", "impute", "fit-genome"])
def test_cli_commands_take_ray(command):
    from typer.testing import CliRunner

    from epitensor.cli import app

    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--ray" in result.output


def test_cli_fit_genome_saves_every_axis(trained_model, by_chrom_store, tmp_path):
    from typer.testing import CliRunner

    from epitensor.cli import app
    from epitensor.estimators.avocado import Avocado

    trained_model.save(tmp_path / "model")
    args = ["fit-genome", str(tmp_path / "model"), by_chrom_store.url, "--out",
            str(tmp_path / "genome-model"), "--axis", "chr4", "--axis", "chr8", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fitted = Avocado.load(tmp_path / "genome-model")
    assert set(fitted.genome_axes_) == {"pilot", "chr4", "chr8"}
    assert fitted.genome_factors("chr8").shape == (20_002, 24)
    # The layout sends chr8's bins to the stage-2 axis, so imputation by genomic
    # coordinates uses the new factors; chr1 (not fitted) stays on the pilot axis.
    region = by_chrom_store.layout.axis_regions("chr8").iloc[0]
    hit = fitted.layout_.locate("chr8", int(region.start), int(region.start) + 2_500)
    assert list(hit.axis) == ["chr8"]
    assert list(fitted.layout_.locate("chr1", 151_158_100, 151_158_200).axis) == ["pilot"]
    import pybigtools

    from epitensor.workflows.impute import impute

    (written,) = impute(fitted, [("E003", "H3K4me3")], tmp_path / "chr8.bw", chroms=["chr8"],
                        arcsinh=True, verbose=False)  # fmt: skip
    start = int(region.first_bin) * 25
    with pybigtools.open(str(written)) as bigwig:
        values = np.asarray(bigwig.values("chr8", start, start + 2_500, fillna=None))[::25]
    expected = fitted.predict("E003", "H3K4me3", axis="chr8", start=0, end=100)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "already exists" in again.output


# the one path through the CLI: --ray with every other option ---------------------------------


SAVED_MODEL = Path(__file__).resolve().parent / "data" / "saved-model-v1"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cli_impute_ray_with_precision_writes_the_in_process_files(ray_local, precision, tmp_path):
    """`impute --ray local --precision P` (a TypeError before) gives the in-process bytes."""
    from typer.testing import CliRunner

    from epitensor.cli import app

    common = [str(SAVED_MODEL), "--celltype", "E065", "--assay", "H3K4me1", "--celltype",
              "E117", "--assay", "H3K27me3", "--precision", precision, "--chrom", "chr1",
              "--quiet"]  # fmt: skip
    runs = {}
    for label, extra in (("local", []), ("ray", ["--ray", ray_local])):
        out = tmp_path / label
        result = CliRunner().invoke(app, ["impute", *common, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        runs[label] = sorted(out.glob("*.bigWig"))
    assert [p.name for p in runs["ray"]] == ["E065.H3K4me1.bigWig", "E117.H3K27me3.bigWig"]
    for a, b in zip(runs["local"], runs["ray"]):
        assert a.read_bytes() == b.read_bytes(), b.name
    params = json.loads((tmp_path / "ray" / "impute.json").read_text())
    assert params["precision"] == precision


def _store_of_build(path: Path, genome: str) -> Store:
    """The saved model's two axes of real pilot data, labelled as genome ``genome``."""
    from epitensor.store.datasets import roadmap_pilot_arrays

    model = Avocado.load(SAVED_MODEL)
    store = Store.create(path, model.layout_, chrom_sizes(genome), genome=genome)
    for (celltype, assay), values in roadmap_pilot_arrays().items():
        store.add_track(celltype, assay, {"head": values[:3_000], "next": values[3_000:6_000]})
    return Store.open(path)


@pytest.mark.parametrize("ray", [None, "local"])
def test_cli_fit_genome_refuses_a_store_of_another_build(ray, request, tmp_path):
    """fit-genome (in-process and on Ray) checks the store's genome build like Avocado.fit_genome."""
    from typer.testing import CliRunner

    from epitensor.cli import app

    extra = [] if ray is None else ["--ray", request.getfixturevalue("ray_local")]
    store = _store_of_build(tmp_path / "hg38.zarr", "hg38")
    out = tmp_path / "fitted"
    result = CliRunner().invoke(
        app, ["fit-genome", str(SAVED_MODEL), store.url, "--out", str(out), "--quiet", *extra]
    )
    assert result.exit_code == 1, result.output
    assert "genome 'hg38'" in result.output and "hg19" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing half-written


def test_cli_fit_genome_ray_equals_in_process(ray_local, tmp_path):
    """`fit-genome --ray local --axis --epochs` gives the in-process factors bit for bit."""
    from typer.testing import CliRunner

    from epitensor.cli import app

    store = _store_of_build(tmp_path / "store.zarr", "hg19")
    fitted = {}
    for label, extra in (("local", []), ("ray", ["--ray", ray_local])):
        out = tmp_path / label
        args = ["fit-genome", str(SAVED_MODEL), store.url, "--out", str(out), "--axis", "next",
                "--axis", "head", "--epochs", "2", "--quiet", *extra]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        fitted[label] = Avocado.load(out)
    before = Avocado.load(SAVED_MODEL)
    for axis in ("head", "next"):
        local = fitted["local"].genome_factors(axis)
        np.testing.assert_array_equal(fitted["ray"].genome_factors(axis), local)
        assert not np.array_equal(local, before.genome_factors(axis))  # refitted
    expected = ["genome:next"] * 2 + ["genome:head"] * 2  # 2 epochs each, in --axis order
    assert list(fitted["ray"].history_.stage[-4:]) == expected
