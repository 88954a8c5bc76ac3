"""epitensor: multi-scale deep tensor factorization of the epigenome (the Avocado method).

The public API is what this module exports, and only that::

    import epitensor as et

    store = et.open_store("roadmap-pilot")           # the bundled real sample
    model = et.Avocado.from_preset("cpu-small").fit(store)
    et.impute(model, [("E116", "H3K27me3")], "E116.H3K27me3.bw", chroms=["chr21"])

Everything else is reached through its subpackage. The subpackages are layers,
each importing only from those before it (``tests/test_architecture.py``
checks it, imports inside functions included):

``_utils`` (errors, progress, the machine, files) -> ``parallel`` (the task
runner, Ray) -> ``viz`` (figures, tables, the HTML report) -> ``genome``
(coordinates, layouts, annotations) -> ``io`` (track readers, the bigWig
encoder, writers, downloads) -> ``store`` (the Zarr compendium, ingest, names,
the bundled datasets) -> ``nn`` (hyperparameters, the torch module, inference,
the model directory format) -> ``train`` (sampling, the training loop,
checkpoints) -> ``estimators`` (``Avocado``, stage 2, baselines, the ensemble)
-> ``workflows`` (training and imputation jobs, latent factors, new cell types,
the original's models, explain, annotate) -> ``evaluation`` (metrics,
benchmark, cross-validation, relationships, downstream, tune) -> ``demo`` ->
``cli``.

Names load on first use, so ``import epitensor`` is quick and imports neither
torch nor zarr until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from epitensor._utils import EpitensorError, EpitensorWarning, __version__

#: Public name -> the module that defines it.
_API = {
    "Avocado": "epitensor.estimators.avocado",
    "AverageActivity": "epitensor.estimators.baselines",
    "ChromImputeGBT": "epitensor.estimators.baselines",
    "Ensemble": "epitensor.estimators.ensemble",
    "EnsembleRule": "epitensor.estimators.ensemble",
    "IntervalCalibration": "epitensor.estimators.intervals",
    "Layout": "epitensor.genome.coordinates",
    "Store": "epitensor.store.compendium",
    "add_tracks": "epitensor.store.ingest",
    "annotate": "epitensor.workflows.annotate",
    "chrom_sizes": "epitensor.genome.coordinates",
    "IngestOptions": "epitensor.store.options",
    "TrainOptions": "epitensor.workflows.options",
    "ImputeOptions": "epitensor.workflows.options",
    "AnnotateOptions": "epitensor.workflows.options",
    "BenchmarkOptions": "epitensor.evaluation.options",
    "CVOptions": "epitensor.evaluation.options",
    "TuneOptions": "epitensor.evaluation.options",
    "DownstreamOptions": "epitensor.evaluation.options",
    "embed": "epitensor.workflows.factors",
    "evaluate": "epitensor.evaluation.benchmark",
    "explain": "epitensor.workflows.explain",
    "extend": "epitensor.workflows.extend",
    "import_reference": "epitensor.workflows.reference",
    "pretrained": "epitensor.workflows.pretrained",
    "pull_model": "epitensor.workflows.pretrained",
    "impute": "epitensor.workflows.impute",
    "ingest": "epitensor.store.ingest",
    "open_store": "epitensor.store.registry",
    "roadmap_pilot": "epitensor.store.datasets",
    "run_benchmark": "epitensor.evaluation.benchmark",
    "run_cv": "epitensor.evaluation.benchmark",
    "run_downstream": "epitensor.evaluation.downstream",
    "train_genome": "epitensor.workflows.training",
    "train_model": "epitensor.workflows.training",
    "tune": "epitensor.evaluation.tune",
}

__all__ = ["EpitensorError", "EpitensorWarning", "__version__", *sorted(_API)]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'epitensor' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools and IDEs see; nothing of it runs
    from epitensor.estimators.avocado import Avocado
    from epitensor.estimators.baselines import AverageActivity, ChromImputeGBT
    from epitensor.estimators.ensemble import Ensemble, EnsembleRule
    from epitensor.estimators.intervals import IntervalCalibration
    from epitensor.evaluation.benchmark import evaluate, run_benchmark, run_cv
    from epitensor.evaluation.downstream import run_downstream
    from epitensor.evaluation.options import (
        BenchmarkOptions,
        CVOptions,
        DownstreamOptions,
        TuneOptions,
    )
    from epitensor.evaluation.tune import tune
    from epitensor.genome.coordinates import Layout, chrom_sizes
    from epitensor.store.compendium import Store
    from epitensor.store.datasets import roadmap_pilot
    from epitensor.store.ingest import add_tracks, ingest
    from epitensor.store.options import IngestOptions
    from epitensor.store.registry import open_store
    from epitensor.workflows.annotate import annotate
    from epitensor.workflows.explain import explain
    from epitensor.workflows.extend import extend
    from epitensor.workflows.factors import embed
    from epitensor.workflows.impute import impute
    from epitensor.workflows.options import AnnotateOptions, ImputeOptions, TrainOptions
    from epitensor.workflows.pretrained import pretrained, pull_model
    from epitensor.workflows.reference import import_reference
    from epitensor.workflows.training import train_genome, train_model
