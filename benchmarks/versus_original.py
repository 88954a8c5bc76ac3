"""Paper-size training against the original Avocado (avocado-epigenome 0.4.0 on TensorFlow), same machine.

Both sides train the paper's model (cell type 32, assay 256, genome 25 / 40 / 45
factors, 2 x 2048 ReLU layers, batch 40,000, Adam lr 0.001) on the same data:
the 25 tracks x 1,126,469 positions of the bundled pilot store (5 cell types,
5 assays). The original trains through its own ``Avocado.fit`` (Keras
``fit_generator``, its sequential sampler); its ``pickle_safe=`` keyword, which
Keras 2 no longer takes, is dropped by a wrapper around ``Model.fit_generator``
in the child process (the package itself is not edited). epitensor trains
through ``Avocado.fit`` (stage 1: block-shuffled sampler, ``TrainingPlan``,
``run_training``), once in fp32 and once with ``precision="auto"`` (the paper
preset's: bf16 autocast where the CPU has native bf16, else fp32, so the second
row would repeat the first and is left out there). Its child sets
``OMP_WAIT_POLICY=PASSIVE`` before torch loads, as the ``epitensor`` command does.

Each side runs in its own child process, one after the other. The first
``--warmup`` optimiser steps are not timed; samples/s is the batch size times
the timed steps over their wall time. The CPU seconds the child used over the
same steps (user + system, all threads) are given per 1,000 samples: on a
shared machine they move less than the wall time.

``--isa avx2`` emulates an AVX2-only CPU on an AVX-512 one: both children run
with ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN, used by TensorFlow and by torch),
``MKL_ENABLE_INSTRUCTIONS=AVX2`` (MKL, torch's default fp32 BLAS) and
``ATEN_CPU_CAPABILITY=avx2`` (torch's own kernels), and epitensor's
``precision="auto"`` row is fp32, as on a CPU without native bf16. The ISA
each library reports is printed before the table: oneDNN's from
``ONEDNN_VERBOSE``, torch's from ``torch.backends.cpu.get_cpu_capability``,
and MKL's branch from its service functions (on an AMD CPU MKL takes its AMD
code path, AVX2 kernels, whatever ``MKL_ENABLE_INSTRUCTIONS`` says). It is an
emulation: the cores, caches, memory and clocks stay this machine's.

``--gemm`` instead times the matrix products of one paper-size training step
(the 2048 x 2048 layer's forward, input-gradient and weight-gradient products,
and the 110-input first layer's), each computed as the training step computes
it, with every library that could run them: torch's default (MKL), torch
through oneDNN (:func:`epitensor.nn.module.onednn_linear`), torch bf16 (where
native), numpy (OpenBLAS) and TensorFlow (oneDNN, in the original's
environment). Rounds are interleaved; the table gives the median GFLOP/s with
``--threads`` threads (wall time) and with one thread (its process CPU time,
which a busy machine disturbs much less). About 2 minutes.

The original needs its own environment (TensorFlow 2.15 and torch do not share
one)::

    python3 -m venv /tmp/avocado-venv
    /tmp/avocado-venv/bin/pip install avocado-epigenome==0.4.0 tensorflow-cpu==2.15.1 keras==2.15.0

Usage::

    python benchmarks/versus_original.py --original-python /tmp/avocado-venv/bin/python
        [--isa avx2] [--steps 3] [--warmup 1] [--batch 40000] [--threads 2]
    python benchmarks/versus_original.py --gemm --original-python ... [--isa avx2]

(or set ``AVOCADO_PYTHON`` instead of ``--original-python``). A default run
takes about a minute on an idle 2-core AVX-512 machine, about 2 with ``--isa avx2``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AVX2_ENV = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's BLAS, for the --gemm table
}
PAPER = {"n_celltype_factors": 32, "n_assay_factors": 256, "n_25bp_factors": 25,
         "n_250bp_factors": 40, "n_5kbp_factors": 45, "n_layers": 2, "n_nodes": 2048}  # fmt: skip


class _Enough(Exception):
    """Raised from the timed step once enough steps are timed (ends epitensor's run)."""


def _usage() -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss}


def _rates(marks: list[tuple[float, dict]], batch: int, warmup: int) -> dict:
    """samples/s and CPU s per 1,000 samples from per-step (time, usage) marks after warm-up."""
    (t0, u0), (t1, u1) = marks[warmup - 1], marks[-1]
    n = batch * (len(marks) - warmup)
    return {
        "samples_per_s": round(n / (t1 - t0)),
        "cpu_s_per_1k": round((u1["cpu"] - u0["cpu"]) / n * 1000, 3),
        "timed_steps": len(marks) - warmup,
        "peak_rss_gb": round(u1["rss"] / 1e6, 2),
    }


# original side (runs in the original's environment: no torch, no epitensor) -------------------


def original_child(args) -> None:
    """Train the original's Avocado for ``warmup + steps`` batches; print one JSON line."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import avocado
    import keras
    from keras.models import Model

    fit_generator = Model.fit_generator

    def without_pickle_safe(self, *a, pickle_safe=None, **kw):
        # Keras 1 keyword the package still passes; Keras 2 has no such argument
        return fit_generator(self, *a, **kw)

    Model.fit_generator = without_pickle_safe
    names = json.loads(Path(args.data).with_suffix(".json").read_text())
    signal = np.load(args.data)
    data = {(c, a): signal[i] for i, (c, a) in enumerate(names)}
    celltypes = list(dict.fromkeys(c for c, _ in names))
    assays = list(dict.fromkeys(a for _, a in names))
    np.random.seed(0)
    tf.random.set_seed(0)
    model = avocado.Avocado(
        celltypes, assays, n_genomic_positions=signal.shape[1], batch_size=args.batch, **PAPER
    )
    marks: list[tuple[float, dict]] = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append((time.perf_counter(), _usage()))

    model.fit(data, n_epochs=1, epoch_size=args.warmup + args.steps, verbose=0,
              callbacks=[Timer()])  # fmt: skip
    result = _rates(marks, args.batch, args.warmup)
    result.update(side="original", precision="fp32",
                  versions=f"avocado {avocado.__version__}, TF {tf.__version__}, "
                           f"Keras {keras.__version__}")  # fmt: skip
    print(json.dumps(result), flush=True)


# epitensor side ----------------------------------------------------------------------------------


def epitensor_child(args) -> None:
    """Train epitensor's stage 1 for ``warmup + steps`` batches; print one JSON line."""
    from epitensor._utils import passive_openmp_wait

    passive_openmp_wait()  # as the `epitensor` command does, before torch loads
    import torch

    from epitensor.estimators.avocado import Avocado
    from epitensor.train.fitting import TrainingPlan

    marks: list[tuple[float, dict]] = []
    seen: dict = {}
    step = TrainingPlan.step

    def timed(plan, batch):
        loss = step(plan, batch)
        marks.append((time.perf_counter(), _usage()))
        seen.update(precision=plan.precision, gemm=getattr(plan, "gemm", "default"))
        if len(marks) == args.warmup + args.steps:
            raise _Enough
        return loss

    TrainingPlan.step = timed
    model = Avocado.from_preset("paper").set_params(
        n_epochs=1, batch_size=args.batch, precision=args.precision, n_threads=args.threads,
        verbose=False,
    )  # fmt: skip
    try:
        model.fit("roadmap-pilot")
    except _Enough:
        pass
    result = _rates(marks, args.batch, args.warmup)
    result.update(side="epitensor", asked=args.precision, **seen,
                  omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "default"),
                  versions=f"torch {torch.__version__}")  # fmt: skip
    print(json.dumps(result), flush=True)


def export_pilot(folder: Path) -> Path:
    """The bundled pilot store's tracks as one ``.npy`` (tracks x positions) plus their names."""
    import numpy as np

    from epitensor.store.datasets import roadmap_pilot

    store = roadmap_pilot()
    names = store.track_names()
    rows = [store.track_index(c, a) for c, a in names]
    path = folder / "pilot.npy"
    np.save(path, store.read_block("pilot", tracks=rows))
    path.with_suffix(".json").write_text(json.dumps(names))
    return path


# which instruction sets the libraries use ------------------------------------------------------

_TORCH_ISA = """
import ctypes, os, torch
x = torch.randn(64, 64)
torch.ops.mkldnn._linear_pointwise(x, x, None, "none", [], "")
lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
try:
    mkl = f"Intel CPU {lib.mkl_serv_intel_cpu_true()}, AMD Zen path {lib.mkl_serv_cpuiszen()}"
except AttributeError:
    mkl = "unknown"
print("torch kernels:", torch.backends.cpu.get_cpu_capability(), "| MKL branch:", mkl)
"""
_TF_ISA = "import tensorflow as tf; x = tf.ones((64, 64)); tf.matmul(x, x).numpy()"


def isa_report(original_python: str | None, env: dict) -> list[str]:
    """One line per library: the ISA it runs with under ``env`` (oneDNN's own verbose line)."""
    lines = []
    probes = [("torch", sys.executable, _TORCH_ISA)]
    if original_python:
        probes.append(("TensorFlow", original_python, _TF_ISA))
    for name, python, code in probes:
        out = subprocess.run([python, "-c", code], env={**env, "ONEDNN_VERBOSE": "1"},
                             capture_output=True, text=True)  # fmt: skip
        text = out.stdout + out.stderr
        isa = [ln.split("isa:", 1)[1] for ln in text.splitlines() if "isa:" in ln]
        extra = [ln for ln in out.stdout.splitlines() if ln.startswith("torch kernels")]
        lines.append(
            f"{name}: oneDNN ISA {isa[0] if isa else '?'}" + "".join(f"; {e}" for e in extra)
        )
    return lines


# GEMM microbenchmark -----------------------------------------------------------------------------


def _gemm_cases(batch: int) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, (rows, inner, columns)) of the products of one paper-size training step.

    ``fwd`` is ``x @ W.T`` (x: batch x inputs, W: outputs x inputs), ``dgrad``
    ``g @ W`` and ``wgrad`` ``g.T @ x`` (g: batch x outputs), for the 2048 x 2048
    layer and for the first layer's 110 genome inputs.
    """
    return [
        ("2048 fwd", (batch, 2048, 2048)),
        ("2048 dgrad", (batch, 2048, 2048)),
        ("2048 wgrad", (2048, batch, 2048)),
        ("110 fwd", (batch, 110, 2048)),
        ("110 dgrad", (batch, 2048, 110)),
        ("110 wgrad", (2048, batch, 110)),
    ]


def _operands(name: str, batch: int, make):
    """``(x, W, g)`` of the product ``name``, each made by ``make(rows, columns)``."""
    n_in = 2048 if name.startswith("2048") else 110
    return make(batch, n_in), make(2048, n_in), make(batch, 2048)


def _time(fn, flops: float, cpu: bool, seconds: float = 0.3) -> float:
    """GFLOP/s of ``fn`` over wall time, or over the process's CPU time if ``cpu``."""
    clock = time.process_time if cpu else time.perf_counter
    fn()
    n, tic = 0, clock()
    while True:
        fn()
        n += 1
        if clock() - tic > seconds:
            return flops * n / (clock() - tic) / 1e9


def _torch_backends(batch: int, isa: str) -> dict:
    """Per library, per product, a no-argument function computing it as training does."""
    import numpy as np
    import torch

    from epitensor._utils import resolve_precision
    from epitensor.nn.module import onednn_linear

    bf16 = isa == "native" and resolve_precision("auto", torch.device("cpu")) == "bf16"
    out: dict = {}
    for name, _ in _gemm_cases(batch):
        x, w, g = _operands(name, batch, torch.randn)
        kind = name.split()[1]
        plain = {"fwd": lambda x=x, w=w: x @ w.T, "dgrad": lambda g=g, w=w: g @ w,
                 "wgrad": lambda g=g, x=x: g.T @ x}  # fmt: skip
        out.setdefault("torch default (MKL)", {})[name] = plain[kind]
        # the calls epitensor's oneDNN forward and backward make (transposes as views)
        dnn = {"fwd": lambda x=x, w=w: onednn_linear(x, w),
               "dgrad": lambda g=g, w=w: onednn_linear(g, w.T),
               "wgrad": lambda g=g, x=x: onednn_linear(g.T, x.T)}  # fmt: skip
        out.setdefault("torch oneDNN fp32", {})[name] = dnn[kind]
        xn, wn, gn = x.numpy(), w.numpy(), g.numpy()
        numpy = {"fwd": lambda x=xn, w=wn: np.dot(x, w.T), "dgrad": lambda g=gn, w=wn: np.dot(g, w),
                 "wgrad": lambda g=gn, x=xn: np.dot(g.T, x)}  # fmt: skip
        out.setdefault("numpy (OpenBLAS)", {})[name] = numpy[kind]
        if bf16:
            xb, wb, gb = x.bfloat16(), w.bfloat16(), g.bfloat16()
            half = {"fwd": lambda x=xb, w=wb: x @ w.T, "dgrad": lambda g=gb, w=wb: g @ w,
                    "wgrad": lambda g=gb, x=xb: g.T @ x}  # fmt: skip
            out.setdefault("torch bf16", {})[name] = half[kind]
    return out


def _tf_backends(batch: int, threads: int) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out: dict = {}
    for name, _ in _gemm_cases(batch):
        x, w, g = _operands(name, batch, lambda r, c: tf.random.normal((r, c)))
        kind = name.split()[1]
        fn = {"fwd": lambda x=x, w=w: tf.matmul(x, w, transpose_b=True),
              "dgrad": lambda g=g, w=w: tf.matmul(g, w),
              "wgrad": lambda g=g, x=x: tf.matmul(g, x, transpose_a=True)}[kind]  # fmt: skip
        graph = tf.function(fn)
        out.setdefault("TensorFlow (oneDNN)", {})[name] = lambda f=graph: f().numpy()[0, 0]
    return out


def gemm_child(args) -> None:
    """Time the step's products (torch and numpy, or TensorFlow); print one JSON line."""
    if args.child == "gemm-tf":
        backends = _tf_backends(args.gemm_batch, args.threads)
    else:
        import torch

        torch.set_num_threads(args.threads)
        backends = _torch_backends(args.gemm_batch, args.isa)
    cases = dict(_gemm_cases(args.gemm_batch))
    rounds: dict = {}
    for _ in range(args.rounds):  # interleaved, so a burst of load hits every library
        for backend, fns in backends.items():
            for name, fn in fns.items():
                m, k, n = cases[name]
                rate = _time(fn, 2 * m * k * n, cpu=args.threads == 1)
                rounds.setdefault(backend, {}).setdefault(name, []).append(rate)
    result = {
        b: {n: round(statistics.median(v), 1) for n, v in r.items()} for b, r in rounds.items()
    }
    print(json.dumps(result), flush=True)


def run_gemm(args, env: dict) -> None:
    """Print the GEMM table: per library, each product with ``--threads`` and on one core."""
    one = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    runs = [
        ("gemm", sys.executable, args.threads, env),
        ("gemm", sys.executable, 1, {**env, **one}),
    ]
    if args.original_python:
        runs += [("gemm-tf", args.original_python, args.threads, env),
                 ("gemm-tf", args.original_python, 1, {**env, **one})]  # fmt: skip
    results: dict = {}
    for child, python, threads, child_env in runs:
        call = [python, __file__, "--child", child, "--gemm-batch", str(args.gemm_batch),
                "--threads", str(threads), "--rounds", str(args.rounds), "--isa", args.isa]  # fmt: skip
        out = subprocess.run(call, env=child_env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{child} child failed:\n{out.stderr[-3000:]}")
        key = "one" if threads == 1 else "all"
        for backend, values in json.loads(out.stdout.strip().splitlines()[-1]).items():
            results.setdefault(backend, {})[key] = values
    names = [name for name, _ in _gemm_cases(args.gemm_batch)]
    print(f"\nGEMM GFLOP/s, batch {args.gemm_batch:,}: {args.threads} threads (wall time) | "
          f"1 thread (CPU time)\n")  # fmt: skip
    print("| library | " + " | ".join(names) + " | " + " | ".join(f"1T {n}" for n in names) + " |")
    print("|---|" + "---|" * (2 * len(names)))
    for backend, values in results.items():
        cells = [str(values.get(k, {}).get(n, "-")) for k in ("all", "one") for n in names]
        print(f"| {backend} | " + " | ".join(cells) + " |")


# driver ----------------------------------------------------------------------------------------


def run_training_sides(args, env: dict) -> None:
    """Run the original, epitensor fp32 and epitensor auto in turn; print the table."""
    import torch

    from epitensor._utils import resolve_precision

    auto = "fp32" if args.isa == "avx2" else resolve_precision("auto", torch.device("cpu"))
    sides = []
    if args.original_python:
        sides.append(("original", args.original_python, []))
    sides.append(("epitensor", sys.executable, ["--precision", "fp32"]))
    if auto != "fp32":
        sides.append(("epitensor", sys.executable, ["--precision", "auto"]))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        data = export_pilot(Path(folder))
        for side, python, extra in sides:
            call = [python, __file__, "--child", side, "--data", str(data), *extra,
                    "--batch", str(args.batch), "--steps", str(args.steps),
                    "--warmup", str(args.warmup), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(call, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{side} child failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    base = next((r["samples_per_s"] for r in rows if r["side"] == "original"), None)
    print(f"\nPaper-size training, batch {args.batch:,}, {args.threads} threads, "
          f"{args.warmup} warm-up + {args.steps} timed steps; ISA: {args.isa}"
          f"{' (emulated: oneDNN, MKL and torch capped to AVX2)' if args.isa == 'avx2' else ''}"
          f"; epitensor with OMP_WAIT_POLICY="
          f"{next((r['omp_wait_policy'] for r in rows if 'omp_wait_policy' in r), '-')}\n")  # fmt: skip
    print("| side | precision | CPU GEMM | samples/s | CPU s / 1,000 samples | x original | "
          "peak RSS GB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['samples_per_s'] / base:.2f}" if base else "-"
        gemm = "oneDNN (TensorFlow)" if r["side"] == "original" else r.get("gemm", "default")
        print(f"| {r['side']} | {r['precision']} | {gemm} | {r['samples_per_s']:,} | "
              f"{r['cpu_s_per_1k']} | {ratio} | {r['peak_rss_gb']} |")  # fmt: skip
    print("\n" + "; ".join(dict.fromkeys(r["versions"] for r in rows)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original-python", default=os.environ.get("AVOCADO_PYTHON"),
                        help="python of an environment with avocado-epigenome 0.4.0")  # fmt: skip
    parser.add_argument("--isa", choices=["native", "avx2"], default="native")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1)")
    parser.add_argument("--batch", type=int, default=40_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gemm", action="store_true", help="time the step's GEMMs instead")
    parser.add_argument("--gemm-batch", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3, help="GEMM rounds (median)")
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    if args.child:
        {"original": original_child, "epitensor": epitensor_child, "gemm": gemm_child,
         "gemm-tf": gemm_child}[args.child](args)  # fmt: skip
        return
    from epitensor._utils import cpu_summary

    if args.original_python is None:
        print("no --original-python (or AVOCADO_PYTHON): the original is left out; see --help "
              "for how to install it", file=sys.stderr)  # fmt: skip
    env = {**os.environ, **(AVX2_ENV if args.isa == "avx2" else {})}
    print(f"CPU: {cpu_summary()}")
    for line in isa_report(args.original_python, env):
        print(line)
    if args.gemm:
        run_gemm(args, env)
    else:
        run_training_sides(args, env)


if __name__ == "__main__":
    main()
