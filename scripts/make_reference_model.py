"""Write a real-size model in the original Avocado's own file format (h5py only, no TensorFlow).

The original package saves a model as one ``avocado-chrN.json`` + ``avocado-chrN.h5``
pair per chromosome (Keras 2 legacy HDF5; the layout is described in
tests/data/avocado-reference/README.md). Published Roadmap models
are genome-wide at paper size: whole-chromosome genome factor tables, about 14 GB
of float32 for hg19. This script writes a model of that shape, with values drawn
deterministically from a seed, so that importing, imputing and writing at real
size can be run and checked without TensorFlow or a download:

* the JSON: ``celltypes``, ``assays``, ``experiments`` (the ``(cell type, assay)``
  pairs "trained on": a seeded subset), and the sizes, written as the original's
  ``Avocado.save`` writes them (``json.dumps(d, separators=(',', ' : '), indent=4)``);
* the h5: root attributes ``backend``, ``keras_version``, ``model_config`` (a
  Keras ``Functional`` config of the Avocado network) and ``training_config``;
  ``/model_weights`` with ``layer_names`` and one group per layer holding its
  ``weight_names`` and ``<layer>/<weight>:0`` datasets; ``/optimizer_weights``
  with the Keras 2.15 Adam names (``iteration:0`` = 0 and ``m`` / ``v`` tables
  that are declared but never written, so HDF5 stores no bytes for them and
  they read back as zeros);
* the values: every factor is standard normal; the hidden kernels are He-scaled
  (``N(0, 2 / fan_in)``) so activations neither vanish nor explode through ReLU;
  the output layer is then calibrated on a sample of positions and tracks so
  the predictions (arcsinh -log10 p) have mean ``--mean`` and standard deviation
  ``--std`` (defaults 0.6 and 0.5, about the Roadmap pilot signal's), not a
  saturated or constant value.

The network and the cell type / assay factors are drawn once from ``--seed`` and
are identical in every chromosome file (the importer checks that); each
chromosome's genome factors come from ``(seed, chromosome name)``, so a
chromosome's file is the same whichever others are written with it.

Usage::

    python scripts/make_reference_model.py --out models/avocado            # chr21 + chr22, paper size
    python scripts/make_reference_model.py --out models/avocado --chrom all  # every hg19 chromosome
    python scripts/make_reference_model.py --out tiny/avocado --chrom chr21 --n-nodes 32 \\
        --n-25bp-factors 2 --n-250bp-factors 2 --n-5kbp-factors 2 --celltypes 4 --assays 3

writes ``models/avocado-chr21.json``, ``models/avocado-chr21.h5``, ... Import them
with ``epitensor import-reference models/avocado --out model``.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import h5py
import numpy as np

KERAS_VERSION = "2.15.0"
# hg19 chromosomes of the published Roadmap models.
ALL_CHROMS = [f"chr{i}" for i in range(1, 23)] + ["chrX"]
DEFAULT_CHROMS = ["chr21", "chr22"]
# Roadmap epigenome IDs E001..E129 without E060 and E064 (127 cell types).
ROADMAP_CELLTYPES = [f"E{i:03d}" for i in range(1, 130) if i not in (60, 64)]
ROADMAP_ASSAYS = [
    "H3K4me3",
    "H3K27me3",
    "H3K36me3",
    "H3K9me3",
    "H3K4me1",
    "H3K27ac",
    "H3K9ac",
    "H3K4me2",
    "H2A.Z",
    "H3K79me2",
    "H4K20me1",
    "DNase",
    "H2AK5ac",
    "H2BK120ac",
    "H2BK12ac",
    "H2BK15ac",
    "H2BK20ac",
    "H2BK5ac",
    "H3K14ac",
    "H3K18ac",
    "H3K23ac",
    "H3K4ac",
    "H3K79me1",
    "H3K56ac",
]
PAPER = {
    "n_celltype_factors": 32,
    "n_assay_factors": 256,
    "n_25bp_factors": 25,
    "n_250bp_factors": 40,
    "n_5kbp_factors": 45,
    "n_layers": 2,
    "n_nodes": 2048,
    "batch_size": 40000,
}
#: Tiny sizes: the tests' models and the benchmarks' ``--quick`` runs.
TINY = {
    "n_celltype_factors": 4,
    "n_assay_factors": 6,
    "n_25bp_factors": 2,
    "n_250bp_factors": 3,
    "n_5kbp_factors": 2,
    "n_layers": 2,
    "n_nodes": 32,
    "batch_size": 40000,
}
ROWS_PER_WRITE = 1 << 20  # genome rows drawn and written at a time (bounded memory)


# names and sizes ----------------------------------------------------------------------------


def model_names(n_celltypes: int, n_assays: int) -> tuple[list[str], list[str]]:
    """Cell type and assay names: Roadmap's, then ``C###`` / ``A###`` past their count."""
    celltypes = ROADMAP_CELLTYPES[:n_celltypes]
    celltypes += [f"C{i:03d}" for i in range(len(celltypes), n_celltypes)]
    assays = ROADMAP_ASSAYS[:n_assays]
    assays += [f"A{i:03d}" for i in range(len(assays), n_assays)]
    return celltypes, assays


def experiments(
    celltypes: list[str], assays: list[str], n: int, rng: np.random.Generator
) -> list[list[str]]:
    """``n`` distinct (cell type, assay) pairs, drawn from ``rng``, in cell type then assay order."""
    n = min(n, len(celltypes) * len(assays))
    picked = np.sort(rng.choice(len(celltypes) * len(assays), size=n, replace=False))
    return [[celltypes[k // len(assays)], assays[k % len(assays)]] for k in picked]


def chrom_positions(chrom: str, genome: str = "hg19") -> int:
    """25-bp bins of a whole chromosome (the last one may be partial)."""
    from epitensor.genome.coordinates import chrom_sizes

    sizes = chrom_sizes(genome)
    if chrom not in sizes.index:
        raise SystemExit(f"unknown chromosome {chrom!r} for {genome}; known: {list(sizes.index)}")
    return -(-int(sizes[chrom]) // 25)


def table_rows(n_positions: int) -> dict[str, int]:
    """Rows of the three genome tables as Keras sized them (``n // 10 + 1``, ``n // 200 + 1``)."""
    return {
        "genome_25bp_embedding": n_positions,
        "genome_250bp_embedding": n_positions // 10 + 1,
        "genome_5kbp_embedding": n_positions // 200 + 1,
    }


# the shared weights ---------------------------------------------------------------------------


def _he(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def shared_weights(
    sizes: dict, n_celltypes: int, n_assays: int, seed: int, mean: float, std: float
) -> dict[str, dict[str, np.ndarray]]:
    """Network and cell type / assay factors, identical for every chromosome.

    Returns
    -------
    dict of str to dict of str to numpy.ndarray
        ``{layer: {"embeddings" | "kernel" | "bias": float32 array}}``; kernels
        in Keras orientation ``(in_features, out_features)``.
    """
    rng = np.random.default_rng([seed, 0])
    n_in = sum(sizes[k] for k in _FACTOR_KEYS)
    weights = {
        "celltype_embedding": {
            "embeddings": rng.standard_normal((n_celltypes, sizes["n_celltype_factors"]))
        },
        "assay_embedding": {
            "embeddings": rng.standard_normal((n_assays, sizes["n_assay_factors"]))
        },
    }
    fan_in = n_in
    for i in range(sizes["n_layers"]):
        weights[f"dense_{i}"] = {
            "kernel": _he(rng, fan_in, sizes["n_nodes"]),
            "bias": rng.uniform(-0.1, 0.1, sizes["n_nodes"]),
        }
        fan_in = sizes["n_nodes"]
    weights = {k: {p: v.astype(np.float32) for p, v in d.items()} for k, d in weights.items()}
    # Calibrate the output on a sample: hidden activations of random tracks at
    # random (standard normal) genome factors, as the chromosome tables are drawn.
    sample = rng.standard_normal(
        (4096, n_in - sizes["n_celltype_factors"] - sizes["n_assay_factors"])
    )
    ct = weights["celltype_embedding"]["embeddings"][rng.integers(0, n_celltypes, 4096)]
    assay = weights["assay_embedding"]["embeddings"][rng.integers(0, n_assays, 4096)]
    hidden = np.concatenate([ct, assay, sample.astype(np.float32)], axis=1)
    for i in range(sizes["n_layers"]):
        hidden = np.maximum(
            hidden @ weights[f"dense_{i}"]["kernel"] + weights[f"dense_{i}"]["bias"], 0
        )
    direction = rng.standard_normal((sizes["n_nodes"], 1))
    raw = hidden @ direction
    scale = std / max(float(raw.std()), 1e-12)
    kernel = (direction * scale).astype(np.float32)
    bias = np.array([mean - float((hidden @ kernel).mean())], dtype=np.float32)
    weights["y_pred"] = {"kernel": kernel, "bias": bias}
    return weights


_FACTOR_KEYS = (
    "n_celltype_factors",
    "n_assay_factors",
    "n_25bp_factors",
    "n_250bp_factors",
    "n_5kbp_factors",
)


# the files ----------------------------------------------------------------------------------


def _layer_names(n_layers: int) -> list[str]:
    inputs = [
        f"{k}_input" for k in ("celltype", "assay", "genome_25bp", "genome_250bp", "genome_5kbp")
    ]
    embeddings = [name.replace("_input", "_embedding") for name in inputs]
    flattens = ["flatten"] + [f"flatten_{i}" for i in range(1, 5)]
    return [
        *inputs,
        *embeddings,
        *flattens,
        "concatenate",
        *(f"dense_{i}" for i in range(n_layers)),
        "y_pred",
    ]


def _initializer(name: str, **config) -> dict:
    return {
        "module": "keras.initializers",
        "class_name": name,
        "config": config,
        "registered_name": None,
    }


def model_config(sizes: dict, n_celltypes: int, n_assays: int, n_positions: int) -> dict:
    """The Keras ``Functional`` config of the Avocado network, as ``model.save`` records it."""
    inputs = ["celltype", "assay", "genome_25bp", "genome_250bp", "genome_5kbp"]
    dims = [n_celltypes, n_assays, *table_rows(n_positions).values()]
    widths = [sizes[k] for k in _FACTOR_KEYS]
    layers = []
    for name in inputs:
        config = {
            "batch_input_shape": [None, 1],
            "dtype": "float32",
            "sparse": False,
            "ragged": False,
            "name": f"{name}_input",
        }
        layers.append(
            {
                "class_name": "InputLayer",
                "config": config,
                "name": f"{name}_input",
                "inbound_nodes": [],
            }
        )
    for name, dim, width in zip(inputs, dims, widths):
        config = {
            "name": f"{name}_embedding",
            "trainable": True,
            "dtype": "float32",
            "batch_input_shape": [None, 1],
            "input_dim": int(dim),
            "output_dim": int(width),
            "embeddings_initializer": _initializer(
                "RandomUniform", minval=-0.05, maxval=0.05, seed=None
            ),
            "embeddings_regularizer": None,
            "activity_regularizer": None,
            "embeddings_constraint": None,
            "mask_zero": False,
            "input_length": 1,
        }
        layers.append(
            {
                "class_name": "Embedding",
                "config": config,
                "name": f"{name}_embedding",
                "inbound_nodes": [[[f"{name}_input", 0, 0, {}]]],
            }
        )
    flattens = ["flatten"] + [f"flatten_{i}" for i in range(1, 5)]
    for flat, name in zip(flattens, inputs):
        config = {
            "name": flat,
            "trainable": True,
            "dtype": "float32",
            "data_format": "channels_last",
        }
        layers.append(
            {
                "class_name": "Flatten",
                "config": config,
                "name": flat,
                "inbound_nodes": [[[f"{name}_embedding", 0, 0, {}]]],
            }
        )
    layers.append(
        {
            "class_name": "Concatenate",
            "config": {"name": "concatenate", "trainable": True, "dtype": "float32", "axis": -1},
            "name": "concatenate",
            "inbound_nodes": [[[f, 0, 0, {}] for f in flattens]],
        }
    )
    previous = "concatenate"
    dense = [(f"dense_{i}", sizes["n_nodes"], "relu") for i in range(sizes["n_layers"])]
    for name, units, activation in [*dense, ("y_pred", 1, "linear")]:
        config = {
            "name": name,
            "trainable": True,
            "dtype": "float32",
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": _initializer("GlorotUniform", seed=None),
            "bias_initializer": _initializer("Zeros"),
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        }
        layers.append(
            {
                "class_name": "Dense",
                "config": config,
                "name": name,
                "inbound_nodes": [[[previous, 0, 0, {}]]],
            }
        )
        previous = name
    return {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "trainable": True,
            "layers": layers,
            "input_layers": [[f"{name}_input", 0, 0] for name in inputs],
            "output_layers": [["y_pred", 0, 0]],
        },
    }


TRAINING_CONFIG = {
    "loss": "mse",
    "metrics": [
        [
            {
                "class_name": "MeanMetricWrapper",
                "config": {"name": "mse", "dtype": "float32", "fn": "mean_squared_error"},
            }
        ]
    ],
    "weighted_metrics": None,
    "loss_weights": None,
    "optimizer_config": {
        "class_name": "Custom>Adam",
        "config": {
            "name": "Adam",
            "weight_decay": None,
            "clipnorm": None,
            "global_clipnorm": None,
            "clipvalue": None,
            "use_ema": False,
            "ema_momentum": 0.99,
            "ema_overwrite_frequency": None,
            "jit_compile": False,
            "is_legacy_optimizer": False,
            "learning_rate": 0.0010000000474974513,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-07,
            "amsgrad": False,
        },
    },
}


def _weight_parts(layer: str) -> list[str]:
    return ["embeddings"] if layer.endswith("_embedding") else ["kernel", "bias"]


def _shapes(sizes: dict, n_celltypes: int, n_assays: int, n_positions: int) -> dict:
    """``{(layer, part): shape}`` of every weight."""
    rows = table_rows(n_positions)
    shapes = {
        ("celltype_embedding", "embeddings"): (n_celltypes, sizes["n_celltype_factors"]),
        ("assay_embedding", "embeddings"): (n_assays, sizes["n_assay_factors"]),
    }
    for (layer, n_rows), key in zip(rows.items(), _FACTOR_KEYS[2:]):
        shapes[(layer, "embeddings")] = (n_rows, sizes[key])
    fan_in = sum(sizes[k] for k in _FACTOR_KEYS)
    for i in range(sizes["n_layers"]):
        shapes[(f"dense_{i}", "kernel")] = (fan_in, sizes["n_nodes"])
        shapes[(f"dense_{i}", "bias")] = (sizes["n_nodes"],)
        fan_in = sizes["n_nodes"]
    shapes[("y_pred", "kernel")], shapes[("y_pred", "bias")] = (fan_in, 1), (1,)
    return shapes


def _write_genome_table(dataset: h5py.Dataset, rng: np.random.Generator) -> None:
    """Fill a genome factor table with standard normal rows, a block at a time."""
    n_rows, width = dataset.shape
    for lo in range(0, n_rows, ROWS_PER_WRITE):
        hi = min(lo + ROWS_PER_WRITE, n_rows)
        dataset[lo:hi] = rng.standard_normal((hi - lo, width), dtype=np.float32)


def chrom_seed(seed: int, chrom: str) -> list[int]:
    """Seed of one chromosome's genome factors: the run's seed and a hash of the name."""
    return [seed, 1, zlib.crc32(chrom.encode())]


def write_chrom(
    stem: Path,
    chrom: str,
    n_positions: int,
    sizes: dict,
    names: tuple[list[str], list[str]],
    trained: list[list[str]],
    shared: dict[str, dict[str, np.ndarray]],
    seed: int,
) -> None:
    """Write ``stem.json`` and ``stem.h5`` of one chromosome (``stem`` = ``.../avocado-chrN``)."""
    celltypes, assays = names
    config = {
        "celltypes": celltypes,
        "assays": assays,
        "experiments": trained,
        "n_celltype_factors": sizes["n_celltype_factors"],
        "n_assay_factors": sizes["n_assay_factors"],
        "n_genomic_positions": n_positions,
        "n_25bp_factors": sizes["n_25bp_factors"],
        "n_250bp_factors": sizes["n_250bp_factors"],
        "n_5kbp_factors": sizes["n_5kbp_factors"],
        "n_layers": sizes["n_layers"],
        "n_nodes": sizes["n_nodes"],
        "batch_size": sizes["batch_size"],
    }
    json_path, h5_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".h5")
    tmp_json, tmp_h5 = json_path.with_suffix(".json.tmp"), h5_path.with_suffix(".h5.tmp")
    tmp_json.write_text(json.dumps(config, separators=(",", " : "), indent=4))
    shapes = _shapes(sizes, len(celltypes), len(assays), n_positions)
    rng = np.random.default_rng(chrom_seed(seed, chrom))
    layers = _layer_names(sizes["n_layers"])
    with h5py.File(tmp_h5, "w") as handle:
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["keras_version"] = KERAS_VERSION
        handle.attrs["model_config"] = json.dumps(
            model_config(sizes, len(celltypes), len(assays), n_positions)
        )
        handle.attrs["training_config"] = json.dumps(TRAINING_CONFIG)
        root = handle.create_group("model_weights")
        root.attrs["backend"] = "tensorflow"
        root.attrs["keras_version"] = KERAS_VERSION
        root.attrs["layer_names"] = layers
        for layer in [*layers, "top_level_model_weights"]:
            group = root.create_group(layer)
            if (layer, "bias") not in shapes and (layer, "embeddings") not in shapes:
                group.attrs["weight_names"] = np.array([], dtype=np.float64)  # as Keras writes
                continue
            parts = _weight_parts(layer)
            group.attrs["weight_names"] = [f"{layer}/{part}:0" for part in parts]
            inner = group.create_group(layer)
            for part in parts:
                shape = shapes[(layer, part)]
                dataset = inner.create_dataset(f"{part}:0", shape=shape, dtype=np.float32)
                if layer.startswith("genome_"):
                    _write_genome_table(dataset, rng)
                else:
                    dataset[...] = shared[layer][part]
        _write_optimizer(handle, shapes, layers)
    tmp_json.replace(json_path)
    tmp_h5.replace(h5_path)


def _write_optimizer(handle: h5py.File, shapes: dict, layers: list[str]) -> None:
    """Keras 2.15's Adam state: names and shapes only (never written: no bytes, reads as 0)."""
    group = handle.create_group("optimizer_weights")
    names = ["iteration:0"]
    group.create_dataset("iteration:0", data=np.int64(0))
    weighted = [(layer, part) for layer in layers for part in _weight_parts(layer)]
    for layer, part in [key for key in weighted if key in shapes]:
        for moment in ("m", "v"):
            name = f"Adam/{moment}/{layer}/{part}:0"
            group.create_dataset(name, shape=shapes[(layer, part)], dtype=np.float32)
            names.append(name)
    group.attrs["weight_names"] = names


# the command --------------------------------------------------------------------------------


def make_model(
    out: str | Path,
    chroms: list[str],
    sizes: dict,
    n_celltypes: int,
    n_assays: int,
    n_experiments: int,
    seed: int = 0,
    mean: float = 0.6,
    std: float = 0.5,
    positions: int | None = None,
    genome: str = "hg19",
    verbose: bool = True,
) -> dict[str, tuple[Path, Path]]:
    """Write one json/h5 pair per chromosome at ``out-chrN``; return ``{chrom: (json, h5)}``.

    ``positions`` replaces each chromosome's length (a made-up slice of that
    many 25-bp positions, to be imported with ``--first-bin``); default None:
    the whole chromosome.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = model_names(n_celltypes, n_assays)
    trained = experiments(*names, n_experiments, np.random.default_rng([seed, 2]))
    shared = shared_weights(sizes, n_celltypes, n_assays, seed, mean, std)
    written = {}
    for chrom in chroms:
        n = positions if positions is not None else chrom_positions(chrom, genome)
        stem = out.with_name(f"{out.name}-{chrom}")
        tic = time.perf_counter()
        write_chrom(stem, chrom, n, sizes, names, trained, shared, seed)
        written[chrom] = (stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".h5"))
        if verbose:
            size = written[chrom][1].stat().st_size
            print(
                f"wrote {written[chrom][1]}: {n:,} positions, {size / 1e9:.2f} GB, "
                f"{time.perf_counter() - tic:.1f} s"
            )
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="file prefix: writes OUT-chrN.json/.h5")
    parser.add_argument("--chrom", action="append", help="chromosome (repeat), or 'all'")
    parser.add_argument("--genome", default="hg19", help="build of the chromosome lengths")
    parser.add_argument("--positions", type=int, help="made-up slice length (default: whole)")
    parser.add_argument("--celltypes", type=int, default=127, help="cell types (Roadmap: 127)")
    parser.add_argument("--assays", type=int, default=24, help="assays (Roadmap: 24)")
    parser.add_argument("--experiments", type=int, default=1014, help="trained pairs listed")
    for key, value in PAPER.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mean", type=float, default=0.6, help="prediction mean (arcsinh)")
    parser.add_argument("--std", type=float, default=0.5, help="prediction std (arcsinh)")
    args = parser.parse_args(argv)
    chroms = args.chrom or DEFAULT_CHROMS
    if chroms == ["all"]:
        chroms = ALL_CHROMS
    sizes = {key: getattr(args, key) for key in PAPER}
    make_model(
        args.out,
        chroms,
        sizes,
        args.celltypes,
        args.assays,
        args.experiments,
        seed=args.seed,
        mean=args.mean,
        std=args.std,
        positions=args.positions,
        genome=args.genome,
    )


if __name__ == "__main__":
    main()
