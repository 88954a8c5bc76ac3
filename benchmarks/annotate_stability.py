"""Stability of ``annotate``'s genome-factor states across training seeds and held-out sets.

Issue 35 item 4: a ``cpu-small`` model trained holding out set A (below) gave
states that switched every 25-bp bin (EM not converged) and no state above 3.4x
for GENCODE TSSs. This trains ``cpu-small`` on the bundled Roadmap pilot sample
for 3 seeds x 2 held-out sets, annotates each model (cell type-independent
states, ``--states 8``, ``--sample`` bins) and reports, per model: the median
segment length (bp, over every BED record), the largest TSS enrichment of any
state, whether EM converged and in how many iterations. Writes a markdown table
to ``docs/annotate/stability.md``.

Usage (heavy: run under the project's lock)::

    flock /tmp/epitensor-heavy.lock python benchmarks/annotate_stability.py \
        --models /tmp/stability-models [--epochs N] [--out docs/annotate/stability.md]

Trained models are kept in ``--models`` (``<set>-seed<k>``) and reused when
present, so the annotation can be rerun without retraining. ``--epochs``
shortens stage 1 (the table says so); the default is the preset's.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from epitensor.estimators.avocado import Avocado
from epitensor.store.datasets import roadmap_pilot
from epitensor.workflows.annotate import DEFAULT_SAMPLE, annotate, element_states

HOLDOUT_SETS = {
    # the set of the issue (every cell type with an assay other than the standard split's)
    "A": ("E003:H3K27me3", "E017:H3K9me3", "E065:H3K4me3", "E116:H3K36me3", "E117:H3K4me1"),
    # one more such set, disjoint from A and from the standard split
    "B": ("E003:H3K36me3", "E017:H3K4me1", "E065:H3K9me3", "E116:H3K4me3", "E117:H3K27me3"),
}
SEEDS = (0, 1, 2)
ANNOTATIONS = Path(__file__).resolve().parents[1] / "tests" / "data" / "annotations" / "hg19-pilot"


def trained(directory: Path, holdout: tuple[str, ...], seed: int, epochs: int | None) -> Avocado:
    """The model in ``directory``, trained there first if absent."""
    if (directory / "config.json").is_file():
        return Avocado.load(directory)
    params = {"seed": seed, "verbose": False}
    if epochs is not None:
        params["n_epochs"] = epochs
    start = time.perf_counter()
    model = Avocado.from_preset("cpu-small", **params).fit(roadmap_pilot(), holdout=holdout)
    model.save(directory)
    print(f"trained {directory.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return model


def segment_lengths(result) -> np.ndarray:
    """Length in bp of every BED record (run of one state)."""
    bed = result.to_bed()
    return (bed.end - bed.start).to_numpy()


def write_table(rows: list[dict], args: argparse.Namespace) -> None:
    """Write (or rewrite) the markdown table of the rows so far."""
    table = pd.DataFrame(rows)
    epochs = "the preset's 20" if args.epochs is None else f"{args.epochs} (20 for --extra models)"
    lines = [
        "# annotate: stability across seeds and held-out sets",
        "",
        f"`cpu-small` on the bundled Roadmap pilot sample, stage-1 epochs: {epochs}; "
        f"`annotate --states {args.states}` (genome factors, the HMM fitted on {args.sample:,} "
        "sampled bins, seed 0), scored against tests/data/annotations/hg19-pilot. Held-out sets: "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in HOLDOUT_SETS.items() if k in args.sets)
        + ". Written by `benchmarks/annotate_stability.py`.",
        "",
        "| " + " | ".join(table.columns) + " |",
        "| " + " | ".join("---" for _ in table.columns) + " |",
    ]
    for values in table.itertuples(index=False):
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Smallest median segment: {table['median segment (bp)'].min():.0f} bp; smallest max "
        f"TSS fold: {table['max TSS fold'].min():.1f}x; EM converged in "
        f"{int(table['EM converged'].sum())} of {len(table)}.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="folder of trained models")
    parser.add_argument("--epochs", type=int, default=None, help="stage-1 epochs")
    parser.add_argument("--states", type=int, default=8)
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, help="bins the HMM fits")
    parser.add_argument("--sets", default="AB")
    parser.add_argument("--out", type=Path, default=Path("docs/annotate/stability.md"))
    parser.add_argument("--train-only", action="store_true", help="train the models, no table")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="SET:SEED=MODEL",
        help="also annotate a model trained elsewhere (repeat), e.g. the 20-epoch seed 0",
    )
    args = parser.parse_args()
    print(platform.processor() or platform.machine(), flush=True)
    runs = [(*extra.split("=", 1)[0].split(":", 1), extra.split("=", 1)[1]) for extra in args.extra]
    runs += [(name, str(seed), None) for seed in SEEDS for name in args.sets]
    rows = []
    for name, seed, path in runs:
        if path is None:
            directory = args.models / f"{name}-seed{seed}"
            model = trained(directory, HOLDOUT_SETS[name], int(seed), args.epochs)
        else:
            model = Avocado.load(path)
        if args.train_only:
            continue
        model.set_params(verbose=False)
        start = time.perf_counter()
        result = annotate(
            model, n_states=args.states, sample_size=args.sample, annotations=ANNOTATIONS
        )
        lengths = segment_lengths(result)
        promoter = element_states(result.enrichment).loc["promoter"]
        row = {
            "held-out set": name,
            "seed": seed,
            "epochs": int(model.n_epochs),
            "segments": len(lengths),
            "median segment (bp)": float(np.median(lengths)),
            "mean segment (bp)": float(lengths.mean()),
            "max TSS fold": float(result.enrichment["TSS"].max()),
            "shortest state (bins)": float(result.params["shortest_state_bins"]),
            "promoter state": promoter["state"],
            "its E116 promoter-states fold": float(promoter["fold"]),
            "EM converged": bool(result.params["converged"]),
            "EM iterations": int(result.params["em_iterations"]),
            "annotate (s)": round(time.perf_counter() - start),
        }
        rows.append(row)
        print(row, flush=True)
    if rows:
        print((args.out).read_text())


if __name__ == "__main__":
    main()
