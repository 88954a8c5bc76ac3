"""Figures and tables of the latent-space annotation for the README (docs/annotate/).

Annotates the bundled Roadmap pilot sample with a trained model twice: cell
type-independent states from the genome factors, and GM12878 (E116) states from
the model's imputed E116 tracks (E116 H3K27me3 is held out in the standard
split, so one of the five tracks was never seen). Both are scored against the
hg19 annotations cut to the pilot regions (tests/data/annotations/hg19-pilot: the
lines of the whole-genome files that touch the pilot, so the scores on the pilot
sample are those of the whole files), including Roadmap's 25-state
ChromHMM segmentation of E116, and drawn under the tracks at the demo's
promoter locus (the GENCODE TSS with the strongest observed E003 H3K4me3, as
``epitensor demo`` picks it).

Usage::

    nice -n 10 python benchmarks/annotate_pilot.py MODEL [--states 10] [--sample 200000]
        [--out docs/annotate]

Writes, for each of ``genome`` and ``E116``: ``<name>.enrichment.tsv/png``,
``<name>.signal.tsv/png``, ``<name>.json`` (the BED itself goes to
``--bed-dir``, default a temporary folder: 1.6 MB and 5.4 MB on the pilot), then
``locus_promoter.png`` (drawn by ``epitensor.workflows.annotate.plot_locus_states``, as in the
demo's report) and ``summary.md`` (markdown tables for the README).
The run time of each annotation is printed with the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from epitensor.demo import annotation_panels, pick_promoter
from epitensor.estimators.avocado import Avocado
from epitensor.genome.annotations import read_tss
from epitensor.genome.coordinates import read_bed
from epitensor.store.datasets import roadmap_pilot
from epitensor.workflows.annotate import (
    DEFAULT_SAMPLE,
    annotate,
    element_states,
    enrichment_summary,
    plot_locus_states,
)

ANNOTATIONS = Path(__file__).resolve().parents[1] / "tests" / "data" / "annotations" / "hg19-pilot"


def cpu_flags() -> str:
    """The CPU model and its vector extensions (AVX2 / AVX-512 / bf16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line), ""
    )
    flags = set(
        next(
            (
                line.split(":", 1)[1].split()
                for line in text.splitlines()
                if line.startswith("flags")
            ),
            [],
        )
    )
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}; {' '.join(wanted)}; torch threads {torch.get_num_threads()}"


def markdown(table: pd.DataFrame, digits: int = 1) -> str:
    """A GitHub-flavoured markdown table (index as the first column)."""
    table = table.round(digits).reset_index()
    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("| " + " | ".join("---" for _ in table.columns) + " |")
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="trained model of the pilot sample")
    parser.add_argument("--states", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/annotate"))
    parser.add_argument("--annotations", type=Path, default=ANNOTATIONS)
    parser.add_argument("--bed-dir", type=Path, default=None)
    parser.add_argument(
        "--sample", type=int, default=DEFAULT_SAMPLE, help="bins the HMM is fitted on"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(cpu_flags())
    model = Avocado.load(args.model)
    model.set_params(verbose=False)
    args.out.mkdir(parents=True, exist_ok=True)
    bed_dir = args.bed_dir or Path(tempfile.mkdtemp(prefix="annotate-"))
    results, sections = {}, []
    for name, celltype in (("genome", None), ("E116", "E116")):
        start = time.perf_counter()
        result = annotate(
            model,
            n_states=args.states,
            celltype=celltype,
            annotations=args.annotations,
            sample_size=args.sample,
            verbose=True,
        )
        seconds = time.perf_counter() - start
        paths = result.write(bed_dir / f"{name}.bed", overwrite=True)
        for key, path in paths.items():
            if key != "bed":
                shutil.copy(path, args.out / path.name)
        results[name] = result
        n_positions = sum(int((s >= 0).sum()) for s in result.states.values())
        print(f"{name}: {seconds:.1f} s for {n_positions:,} positions ({result.features})")
        print(element_states(result.enrichment).round(1).to_string())
        sections.append(
            f"### {result.features} ({args.states} states, {seconds:.0f} s)\n\n"
            + markdown(enrichment_summary(result.enrichment))
        )

    store = roadmap_pilot()
    axis = store.axes[0]
    observed = store.read_track("E003", "H3K4me3", axis=axis)
    gencode = args.annotations / "gencode.v19.TSS.notlow.gff.gz"
    locus = pick_promoter(observed, store.layout, axis, gencode)
    plot_locus_states(
        args.out / "locus_promoter.png",
        model,
        store,
        locus,
        {"genome-factor states": results["genome"], "E116 states (imputed)": results["E116"]},
        annotation_panels(model, ("E003", "H3K4me3")),
        chromhmm=args.annotations / "E116_chromhmm25.bed.gz",
        genes=read_bed(args.annotations / "RefSeqGene.hg19.bed.gz"),
        title=f"States at the demo's promoter locus {locus.region} (hg19)",
    )
    tss = read_tss(gencode)
    print(f"locus {locus.region}; {int((tss.chrom == locus.chrom).sum())} TSS on {locus.chrom}")
    (args.out / "summary.md").write_text(
        "\n\n".join(sections)
        + f"\n\nLocus: {locus.region}. CPU: {cpu_flags()}.\n"
        + json.dumps({k: r.params for k, r in results.items()}, indent=1)
        + "\n"
    )
    print((args.out / "summary.md").read_text())
    print("outputs:", sorted(p.name for p in args.out.iterdir()), "; BEDs in", bed_dir)


if __name__ == "__main__":
    main()
