"""Tests of the training machinery: multi-scale factors, sampler, plan, freezing, checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from epitensor._utils import EpitensorError
from epitensor.nn.module import AvocadoModule, GenomeFactors, onednn_available, onednn_linear
from epitensor.train.fitting import (
    AxisSource,
    EpochSampler,
    TrackSet,
    TrainConfig,
    TrainingPlan,
    fit_genome_axis,
    freeze,
    module_kwargs_of,
    resolve_cpu_gemm,
    validation_positions,
)

REPO = Path(__file__).resolve().parents[1]


def _module(n_positions=450, sparse=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    sizes = dict(
        n_celltype_factors=3,
        n_assay_factors=4,
        n_25bp_factors=2,
        n_250bp_factors=3,
        n_5kbp_factors=4,
        n_layers=2,
        n_nodes=8,
    )
    sizes.update(kwargs)
    return AvocadoModule(2, 3, {"a": n_positions}, sparse=sparse, **sizes)


def _batch(positions, seed=0, scale=1.0):
    from epitensor.train.fitting import Batch

    g = torch.Generator().manual_seed(seed)
    n = len(positions)
    return Batch(
        "a",
        torch.randint(0, 2, (n,), generator=g),
        torch.randint(0, 3, (n,), generator=g),
        torch.as_tensor(positions),
        scale * torch.rand(n, generator=g),
    )


def test_multiscale_shapes_and_rows():
    factors = GenomeFactors(4001, 2, 3, 4, sparse=False)
    assert factors.emb_25bp.weight.shape == (4001, 2)
    assert factors.emb_250bp.weight.shape == (401, 3)  # ceil(4001 / 10)
    assert factors.emb_5kbp.weight.shape == (21, 4)  # ceil(4001 / 200)
    positions = torch.tensor([0, 9, 10, 199, 200, 4000])
    out = factors(positions)
    assert out.shape == (6, 9)
    w25, w250, w5k = (factors.emb_25bp.weight, factors.emb_250bp.weight, factors.emb_5kbp.weight)
    for k, p in enumerate(positions.tolist()):
        expected = torch.cat([w25[p], w250[p // 10], w5k[p // 200]])
        assert torch.equal(out[k], expected)
    # positions 9 and 10 share the 5-kbp row but not the 250-bp row
    assert torch.equal(out[1, 5:], out[2, 5:]) and not torch.equal(out[1, 2:5], out[2, 2:5])


def test_split_first_layer_equals_plain_network():
    module = _module()
    batch = _batch(torch.randint(0, 450, (64,)))
    direct = module.network(module.features(batch.celltypes, batch.assays, batch.positions, "a"))
    split = module(batch.celltypes, batch.assays, batch.positions, "a")
    torch.testing.assert_close(split, direct.squeeze(1), rtol=1e-5, atol=1e-6)
    tracks = module.forward_tracks(torch.tensor([0, 1]), torch.tensor([2, 0]), batch.positions, "a")
    one = module(torch.zeros(64, dtype=torch.long), torch.full((64,), 2), batch.positions, "a")
    torch.testing.assert_close(tracks[0], one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("trainable", [["genome:a"], ["network"], ["celltype", "assay"]])
def test_freezing_really_freezes(trainable):
    module = _module()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    freeze(module, trainable)
    plan = TrainingPlan(
        module, TrainConfig(n_epochs=1, batch_size=64, lr=0.01), torch.device("cpu")
    )
    for seed in range(3):
        plan.step(_batch(torch.randint(0, 450, (64,)), seed))
    prefixes = {
        "genome:a": "genome.a.",
        "network": "network.",
        "celltype": "celltype_embedding",
        "assay": "assay_embedding",
    }
    trained = tuple(prefixes[t] for t in trainable)
    for name, value in module.state_dict().items():
        if name.startswith(trained):
            assert not torch.equal(value, before[name]), name
        else:
            assert torch.equal(value, before[name]), name


def test_freeze_unknown_part_raises():
    with pytest.raises(EpitensorError, match="unknown parts"):
        freeze(_module(), ["genome:b"])


def test_sparse_and_dense_updates_agree():
    """SparseAdam is lazy: rows off a batch keep their moments. When every batch touches
    every row, lazy and dense Adam take identical steps, so the two runs must agree.
    (SparseAdam adds eps before the bias correction, Adam after; eps is made negligible
    here so that this difference in eps placement does not show.)"""
    n = 400  # 400 rows at 25 bp, 40 at 250 bp, 2 at 5 kbp
    sparse, dense = _module(n, sparse=True), _module(n, sparse=False)
    dense.load_state_dict(sparse.state_dict())
    config = TrainConfig(n_epochs=1, batch_size=n, lr=0.01)
    plans = [TrainingPlan(m, config, torch.device("cpu")) for m in (sparse, dense)]
    assert isinstance(plans[0].optimizers[-1], torch.optim.SparseAdam)
    assert all(isinstance(o, torch.optim.Adam) for o in plans[1].optimizers)
    for plan in plans:
        for optimizer in plan.optimizers:
            for group in optimizer.param_groups:
                group["eps"] = 1e-30
    for step in range(5):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(step))
        batch = _batch(order, step)
        for plan in plans:
            plan.step(batch)
    for (name, a), b in zip(sparse.state_dict().items(), dense.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(
        sparse.genome["a"].emb_25bp.weight, _module(n).genome["a"].emb_25bp.weight
    )


def test_lazy_adam_leaves_untouched_rows():
    module = _module(400)
    freeze(module, ["genome:a"])
    before = module.genome["a"].emb_25bp.weight.clone()
    plan = TrainingPlan(module, TrainConfig(n_epochs=1, batch_size=8, lr=0.01), torch.device("cpu"))
    plan.step(_batch(torch.arange(8)))
    plan.step(_batch(torch.arange(100, 108)))
    after = module.genome["a"].emb_25bp.weight
    assert torch.equal(after[200:], before[200:])
    assert not torch.equal(after[:8], before[:8])


def test_validation_positions():
    pos = validation_positions(1000, 5000)
    assert np.array_equal(pos, np.arange(1000))
    pos = validation_positions(1_000_000, 6400, n_windows=64)
    assert len(pos) == 6400 and pos[0] == 0 and pos[-1] == 999_999
    assert np.all(np.diff(pos) > 0)


def _sampler(store, batch_size=1000, block_size=4096, seed=3):
    names = [t for t in store.track_names() if t[0] != "E003"]
    tracks = TrackSet.build(store, names, store.celltypes, store.assays)
    source = AxisSource(store, "pilot", tracks.rows)
    return EpochSampler({"pilot": source}, tracks, batch_size, block_size, 3, seed), tracks


def test_epoch_sees_each_position_once_with_its_value(small_pilot_store):
    store = small_pilot_store
    sampler, tracks = _sampler(store)
    batches = list(sampler.batches(1))
    positions = torch.cat([b.positions for b in batches]).numpy()
    assert np.array_equal(np.sort(positions), np.arange(store.axis_length("pilot")))
    assert len(batches) == sampler.n_batches()
    assert max(len(b.values) for b in batches) == 1000
    signal = store.read_block("pilot")
    ct, assay = torch.cat([b.celltypes for b in batches]), torch.cat([b.assays for b in batches])
    values = torch.cat([b.values for b in batches]).numpy()
    pair = {
        (int(c), int(a)): int(r) for c, a, r in zip(tracks.celltypes, tracks.assays, tracks.rows)
    }
    rows = np.array([pair[(int(c), int(a))] for c, a in zip(ct, assay)])
    np.testing.assert_allclose(values, signal[rows, positions], atol=1e-3)
    assert 0 not in set(ct.tolist()) or store.celltypes[0] != "E003"
    # every training track is drawn, roughly uniformly
    counts = np.bincount(rows, minlength=store.n_tracks)[tracks.rows]
    assert counts.min() > 0.8 * len(positions) / len(tracks)
    # a batch comes from at most group_blocks blocks (sequential reads)
    assert len(np.unique(batches[0].positions.numpy() // 4096)) <= 3


def test_epoch_is_a_function_of_seed_and_epoch(small_pilot_store):
    a, _ = _sampler(small_pilot_store)
    b, _ = _sampler(small_pilot_store)
    first = next(iter(a.batches(2)))
    again = next(iter(b.batches(2)))
    other = next(iter(b.batches(3)))
    assert torch.equal(first.positions, again.positions) and torch.equal(first.values, again.values)
    assert not torch.equal(first.positions, other.positions)


def test_train_config_rejects_bad_values():
    for bad in ({"batch_size": 0}, {"lr": -1.0}, {"precision": "fp8"}, {"early_stopping": 0}):
        config = TrainConfig(**{"n_epochs": 1, "batch_size": 8, "lr": 0.1, **bad})
        with pytest.raises(EpitensorError):
            config.check()


def test_stage2_function_changes_only_the_axis_tables(trained_model, small_pilot_store):
    model = trained_model
    state = {k: v.clone() for k, v in model.module_.state_dict().items()}
    config = TrainConfig(n_epochs=1, batch_size=4096, lr=0.01, verbose=False)
    tables, history = fit_genome_axis(
        module_kwargs_of(model.module_),
        state,
        model.celltypes_,
        model.assays_,
        small_pilot_store,
        "pilot",
        model.training_tracks_,
        config,
    )
    assert tables["emb_25bp.weight"].shape == (40_000, model.n_25bp_factors)
    assert tables["emb_250bp.weight"].shape == (4_000, model.n_250bp_factors)
    assert tables["emb_5kbp.weight"].shape == (200, model.n_5kbp_factors)
    assert len(history) == 1 and history[0]["stage"] == "genome:pilot"
    for name, value in model.module_.state_dict().items():  # the caller's module is untouched
        assert torch.equal(value, state[name]), name
    # same seed, same tables
    again, _ = fit_genome_axis(
        module_kwargs_of(model.module_),
        state,
        model.celltypes_,
        model.assays_,
        small_pilot_store,
        "pilot",
        model.training_tracks_,
        config,
    )
    assert all(torch.equal(tables[k], again[k]) for k in tables)


_KILL_SCRIPT = """
import sys
from epitensor.estimators.avocado import Avocado
from epitensor.store.compendium import Store
model = Avocado(n_celltype_factors=4, n_assay_factors=4, n_25bp_factors=4, n_250bp_factors=4,
                n_5kbp_factors=4, n_layers=1, n_nodes=16, n_epochs=3, batch_size=128, lr=0.003,
                dropout=0.1, n_threads=1, seed=5, verbose=False, lr_schedule="cosine",
                swa_start=2)
model.fit(Store.open(sys.argv[1]), holdout=[("E003", "H3K4me3")], checkpoint_dir=sys.argv[2],
          resume=len(sys.argv) > 3)
"""


def test_kill_and_resume_equals_uninterrupted(small_pilot_store, tmp_path):
    from epitensor.estimators.avocado import Avocado

    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, small_pilot_store.url, str(ckpt)], env=env
    )
    log = ckpt / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and log.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    time.sleep(0.1)  # into epoch 2 (an epoch takes about a second)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((ckpt / "checkpoint" / "state.json").read_text())
    assert state["epoch"] in (1, 2)

    kwargs = dict(
        n_celltype_factors=4,
        n_assay_factors=4,
        n_25bp_factors=4,
        n_250bp_factors=4,
        n_5kbp_factors=4,
        n_layers=1,
        n_nodes=16,
        n_epochs=3,
        batch_size=128,
        lr=0.003,
        dropout=0.1,
        n_threads=1,
        seed=5,
        verbose=False,
        lr_schedule="cosine",
        swa_start=2,
    )
    holdout = [("E003", "H3K4me3")]
    resumed = Avocado(**kwargs).fit(
        small_pilot_store, holdout=holdout, checkpoint_dir=ckpt, resume=True
    )
    straight = Avocado(**kwargs).fit(small_pilot_store, holdout=holdout)
    for (name, a), b in zip(
        resumed.module_.state_dict().items(), straight.module_.state_dict().values()
    ):
        assert torch.equal(a, b), name
    assert list(resumed.history_.epoch) == [1, 2, 3]
    np.testing.assert_array_equal(resumed.history_.holdout_mse, straight.history_.holdout_mse)


def test_parts_to_moves_only_the_axes_asked_for():
    module = AvocadoModule(2, 3, {"a": 450, "b": 900}, n_nodes=8)
    module.parts_to("meta", ["a"])  # the meta device stands in for a GPU
    assert all(p.device.type == "meta" for p in module.network.parameters())
    assert module.celltype_embedding.weight.device.type == "meta"
    assert all(p.device.type == "meta" for p in module.genome["a"].parameters())
    assert all(p.device.type == "cpu" for p in module.genome["b"].parameters())


def test_auto_precision_follows_the_hardware():
    import torch

    from epitensor._utils import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    native &= torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "NO AVX", "AVX2")
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("auto", torch.device("meta")) == "fp32"
    plan = TrainingPlan(_module(), TrainConfig(1, 8, 0.01, precision="auto"), cpu)
    assert plan.precision == resolve_precision("auto", cpu)


def test_auto_precision_is_fp32_when_kernels_are_capped_to_avx2():
    """With torch's kernels capped to AVX2, bf16 would be emulated (7x slower): auto takes fp32."""
    import os
    import subprocess
    import sys

    code = (
        "import torch; from epitensor._utils import resolve_precision; "
        "print(torch.backends.cpu.get_cpu_capability(), resolve_precision('auto', torch.device('cpu')))"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["AVX2", "fp32"]


def test_cosine_schedule_anneals_every_rate():
    module = _module()
    config = TrainConfig(n_epochs=2, batch_size=8, lr=0.01, genome_lr=0.1, lr_schedule="cosine")
    plan = TrainingPlan(module, config, torch.device("cpu"))

    def rates():
        return [g["lr"] for opt in plan.optimizers for g in opt.param_groups]

    assert sorted(rates()) == [0.01, 0.1]
    plan.set_progress(0.5)
    assert sorted(rates()) == pytest.approx([0.005, 0.05])
    plan.set_progress(0.999)
    assert max(rates()) < 1e-6
    plan.set_progress(0.0)
    assert sorted(rates()) == [0.01, 0.1]
    constant = TrainingPlan(module, TrainConfig(n_epochs=2, batch_size=8, lr=0.01), plan.device)
    constant.set_progress(0.5)
    assert [g["lr"] for opt in constant.optimizers for g in opt.param_groups] == [0.01, 0.01]
    with pytest.raises(EpitensorError, match="lr_schedule"):
        TrainConfig(n_epochs=1, batch_size=8, lr=0.01, lr_schedule="step").check()


def test_weight_averaging_keeps_the_mean_of_epochs():
    from epitensor.train.fitting import KeptWeights

    module = _module()
    kept = KeptWeights(TrainConfig(n_epochs=4, batch_size=8, lr=0.01, swa_start=2), scored=False)
    seen = []
    for epoch in range(1, 5):
        with torch.no_grad():
            for param in module.parameters():
                param.uniform_(-1, 1)
        seen.append({k: v.clone() for k, v in module.state_dict().items()})
        kept.update(module, epoch, improved=True)
    assert kept.n_averaged == 3 and "best" not in kept.sets
    for name, value in kept.final().items():
        want = torch.stack([s[name] for s in seen[1:]]).mean(0)
        torch.testing.assert_close(value, want)
    with pytest.raises(EpitensorError, match="cannot be combined"):
        TrainConfig(1, 8, 0.01, swa_start=1, early_stopping=1).check()
    with pytest.raises(EpitensorError, match="swa_start"):
        TrainConfig(1, 8, 0.01, swa_start=0).check()


def test_early_stopping_keeps_the_best_epoch(small_pilot_store):
    """Holdout MSE stops improving, training stops, and the best epoch's parameters are kept."""
    from epitensor.estimators.avocado import Avocado
    from epitensor.train.fitting import HoldoutScorer

    holdout = [("E003", "H3K4me3"), ("E116", "H3K27me3")]
    model = Avocado(
        n_celltype_factors=4,
        n_assay_factors=4,
        n_25bp_factors=16,
        n_250bp_factors=4,
        n_5kbp_factors=4,
        n_layers=1,
        n_nodes=32,
        n_epochs=30,
        batch_size=1024,
        lr=0.01,
        genome_lr=0.1,
        early_stopping=2,
        n_threads=1,
        verbose=False,
    ).fit(small_pilot_store, holdout=holdout)
    scores = model.history_.holdout_mse.to_numpy()
    assert 3 <= len(scores) < 30  # stopped early
    best = int(np.argmin(scores))
    assert best == len(scores) - 3 and (scores[-2:] >= scores[best]).all()
    held = TrackSet.build(small_pilot_store, holdout, model.celltypes_, model.assays_)
    scorer = HoldoutScorer(small_pilot_store, "pilot", held, 100_000)
    assert scorer.score(model.module_, torch.device("cpu")) == pytest.approx(scores[best], rel=1e-5)


def test_resume_refuses_another_run(small_pilot_store, tmp_path):
    from epitensor.estimators.avocado import Avocado

    kwargs = dict(
        n_celltype_factors=2,
        n_assay_factors=2,
        n_25bp_factors=2,
        n_250bp_factors=2,
        n_5kbp_factors=2,
        n_layers=1,
        n_nodes=4,
        n_epochs=1,
        batch_size=4096,
        verbose=False,
    )
    Avocado(**kwargs).fit(small_pilot_store, checkpoint_dir=tmp_path)
    with pytest.raises(EpitensorError, match="another run"):
        Avocado(**{**kwargs, "lr": 0.5}).fit(
            small_pilot_store, checkpoint_dir=tmp_path, resume=True
        )


def test_several_tracks_per_position_stay_together(small_pilot_store):
    store = small_pilot_store
    names = [t for t in store.track_names() if t[0] != "E003"]
    tracks = TrackSet.build(store, names, store.celltypes, store.assays)
    source = AxisSource(store, "pilot", tracks.rows)
    sampler = EpochSampler({"pilot": source}, tracks, 999, 4096, 3, seed=1, tracks_per_position=3)
    batches = list(sampler.batches(1))
    assert len(batches) == sampler.n_batches()
    positions = torch.cat([b.positions for b in batches]).numpy()
    assert len(positions) == sampler.n_samples == 3 * store.axis_length("pilot")
    assert np.array_equal(np.bincount(positions), np.full(store.axis_length("pilot"), 3))
    pairs = torch.stack(
        [
            torch.cat([b.positions for b in batches]),
            torch.cat([b.celltypes for b in batches]) * 10 + torch.cat([b.assays for b in batches]),
        ]
    )
    assert len(torch.unique(pairs, dim=1).T) == len(positions)  # distinct tracks per position
    first = batches[0].positions.numpy()
    assert np.array_equal(first[0::3], first[1::3]) and np.array_equal(first[0::3], first[2::3])


def test_cli_train_stops_at_a_non_finite_loss(small_pilot_store, tmp_path):
    """A diverging run (lr 1e10) stops at the first non-finite loss with a one-line error."""
    from typer.testing import CliRunner

    from epitensor.cli import app

    preset = tmp_path / "diverging.json"
    preset.write_text(json.dumps({"n_nodes": 16, "n_layers": 1, "n_celltype_factors": 4,
                                  "n_assay_factors": 4, "n_25bp_factors": 4,
                                  "n_250bp_factors": 4, "n_5kbp_factors": 4,
                                  "batch_size": 8192, "lr": 1e10, "genome_lr": 1e10}))  # fmt: skip
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        [
            "train",
            small_pilot_store.url,
            "--out",
            str(out),
            "--preset",
            str(preset),
            "--epochs",
            "3",
            "--quiet",
        ],  # fmt: skip
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert "stage 1: the training loss is " in result.output and " at epoch " in result.output
    assert "epitensor info" in result.output
    assert not out.exists()


# the oneDNN fp32 CPU path ----------------------------------------------------------------------

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("relu", [False, True])
def test_onednn_linear_matches_torch_with_its_gradients(relu):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 130, generator=g, requires_grad=True)
    full = torch.randn(64, 530, generator=g)
    weight = full[:, 400:].detach().requires_grad_(True)  # a column slice, like the first layer's
    bias = torch.randn(64, generator=g, requires_grad=True)
    add = torch.randn(300, 64, generator=g, requires_grad=True)
    out = onednn_linear(x, weight, bias, add, relu=relu)
    ref = torch.nn.functional.linear(x, weight, bias) + add
    ref = torch.relu(ref) if relu else ref
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if relu:
        assert (out == 0).float().mean() > 0.3  # the ReLU cut something
    upstream = torch.randn(300, 64, generator=g)
    got = torch.autograd.grad(out, (x, weight, bias, add), upstream)
    want = torch.autograd.grad(ref, (x, weight, bias, add), upstream)
    for name, a, b in zip(("x", "weight", "bias", "add"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4, msg=name)


@needs_onednn
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_onednn_training_takes_the_same_steps(monkeypatch, dropout):
    """Same seed, same batches: the oneDNN forward/backward and torch's default train alike.

    600 nodes, so the backward's weight gradient of the hidden layer runs in oneDNN
    too (it does from 512 inputs on); dropout draws the same masks on both paths.
    """
    modules, plans = {}, {}
    for gemm in ("default", "onednn"):
        monkeypatch.setenv("EPITENSOR_CPU_GEMM", gemm)
        modules[gemm] = _module(n_nodes=600, dropout=dropout)
        config = TrainConfig(n_epochs=1, batch_size=256, lr=0.003, precision="fp32")
        plans[gemm] = TrainingPlan(modules[gemm], config, torch.device("cpu"))
        assert plans[gemm].gemm == gemm
    losses = {gemm: [] for gemm in plans}
    for step in range(6):
        batch = _batch(torch.randint(0, 450, (256,), generator=torch.Generator().manual_seed(step)))
        for gemm, plan in plans.items():
            torch.manual_seed(step)
            losses[gemm].append(plan.step(batch))
    np.testing.assert_allclose(losses["onednn"], losses["default"], rtol=1e-4)
    assert losses["default"][-1] < losses["default"][0]  # it trained
    for (name, a), b in zip(
        modules["default"].state_dict().items(), modules["onednn"].state_dict().values()
    ):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
    assert modules["onednn"].gemm == "default"  # set for the plan's forward passes only


def test_cpu_gemm_follows_the_variable_and_the_vendor(monkeypatch):
    import epitensor.nn.module as training  # where the choice is made

    cpu = torch.device("cpu")
    monkeypatch.setenv("EPITENSOR_CPU_GEMM", "default")
    assert resolve_cpu_gemm(cpu, "fp32") == "default"
    monkeypatch.setenv("EPITENSOR_CPU_GEMM", "fast")
    with pytest.raises(EpitensorError, match="invalid EPITENSOR_CPU_GEMM: got 'fast'"):
        resolve_cpu_gemm(cpu, "fp32")
    monkeypatch.delenv("EPITENSOR_CPU_GEMM")
    # bf16 autocast and other devices keep torch's kernels
    assert resolve_cpu_gemm(cpu, "bf16") == "default"
    assert resolve_cpu_gemm(torch.device("meta"), "fp32") == "default"
    monkeypatch.setattr(training, "onednn_available", lambda: True)
    monkeypatch.setattr(training.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(training, "cpu_vendor", lambda: "AuthenticAMD")
    assert resolve_cpu_gemm(cpu, "fp32") == "onednn"
    monkeypatch.setattr(training, "cpu_vendor", lambda: "GenuineIntel")
    assert resolve_cpu_gemm(cpu, "fp32") == "default"
    monkeypatch.setenv("EPITENSOR_CPU_GEMM", "onednn")
    assert resolve_cpu_gemm(cpu, "fp32") == "onednn"
    monkeypatch.setattr(training, "onednn_available", lambda: False)
    with pytest.raises(EpitensorError, match="no oneDNN linear operator"):
        resolve_cpu_gemm(cpu, "fp32")
    monkeypatch.delenv("EPITENSOR_CPU_GEMM")
    assert resolve_cpu_gemm(cpu, "fp32") == "default"
