"""A new user's path with a published model, timed: pull, add a cell type from bigWigs, impute.

The published models cannot be downloaded from these machines, so the path runs
on the real-size synthetic model of ``benchmarks/real_size.py``
(``scripts/make_reference_model.py``: paper sizes, 127 cell types x 24 assays,
2 x 2048 network, whole-chromosome genome tables) for hg19 chr21, served as
``roadmap-hg19`` by a real HTTP server on 127.0.0.1 (a Zenodo-shaped record
JSON plus the lab server's folder), exactly the code path of a real pull:

1. ``pull``: ``epitensor models pull roadmap-hg19 --chrom chr21`` (download over
   the loopback, md5 check, conversion);
2. ``ingest``: three bigWigs of a new cell type ``MyCells`` (H3K4me3, H3K27me3,
   H3K36me3; made-up signal, the user's own in real life) into a store;
3. ``extend``: ``epitensor extend roadmap-hg19 mine.zarr --celltype MyCells
   --epochs E`` (the name resolves to the pulled model);
4. ``impute``: ``epitensor impute EXTENDED --celltype MyCells --assay H3K27ac
   --chrom chr21`` to bigWig.

Each step runs in a child process: wall time, peak RSS (``wait4``) and the
bytes it leaves on disk. The projection to the genome scales times and disk by
the positions (Roadmap's chr1-22: 115,241,341 25-bp bins, against chr21's
1,925,196). The download over the loopback says nothing of a real network:
the page gives the bytes, to divide by the user's bandwidth.

    python benchmarks/pretrained_path.py [--out DIR] [--epochs 1] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from real_size import _maker  # the real-size synthetic model's maker

REPO = Path(__file__).resolve().parents[1]
CHROM = "chr21"
ROADMAP_CHROMS = [f"chr{i}" for i in range(1, 23)]
MINE = ("H3K4me3", "H3K27me3", "H3K36me3")


def make_site(site: Path, quick: bool) -> Path:
    """The model's files under ``site/lab/roadmap`` and a Zenodo-shaped record, served later."""
    lab = site / "lab" / "roadmap"
    if not (lab / f"avocado-{CHROM}.h5").is_file():
        maker = _maker()
        sizes = maker.TINY if quick else maker.PAPER
        n_celltypes, n_assays = (8, 24) if quick else (127, 24)
        maker.make_model(lab / "avocado", [CHROM], sizes, n_celltypes, n_assays, 500, seed=0)
    record = site / "api" / "records"
    record.mkdir(parents=True, exist_ok=True)
    return record


def write_record(site: Path, url: str) -> None:
    entries = []
    for path in sorted((site / "lab" / "roadmap").glob("avocado-*")):
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        link = f"{url}/lab/roadmap/{path.name}"
        entries.append({"key": path.name, "size": path.stat().st_size,
                        "checksum": f"md5:{digest}", "links": {"self": link}})  # fmt: skip
    (site / "api" / "records" / "4774412").write_text(json.dumps({"files": entries}))


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def write_bigwigs(out: Path) -> Path:
    """Three made-up -log10 p tracks of ``MyCells`` on chr21 and their manifest."""
    import pyBigWig

    from epitensor.genome.coordinates import chrom_sizes, n_bins

    size = int(chrom_sizes("hg19")[CHROM])
    n = n_bins(size)
    rng = np.random.default_rng(1)
    rows = ["celltype\tassay\tpath"]
    for assay in MINE:
        raw = rng.gamma(0.3, 2.0, n // 40 + 1).repeat(40)[:n]  # 1-kb blocks of signal
        bw = pyBigWig.open(str(out / f"MyCells.{assay}.bigWig"), "w")
        bw.addHeader([(CHROM, size)])
        bw.addEntries(CHROM, 0, values=raw.astype(np.float64).tolist(), span=25, step=25)
        bw.close()
        rows.append(f"MyCells\t{assay}\t{out / f'MyCells.{assay}.bigWig'}")
    (out / "mine.tsv").write_text("\n".join(rows) + "\n")
    return out / "mine.tsv"


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_step(name: str, args: list[str], env: dict, measure: Path) -> dict:
    """``epitensor ARGS`` in a child: wall seconds, peak RSS, bytes under ``measure``."""
    code = "import sys; from epitensor.cli import app; app(sys.argv[1:])"
    tic = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, *args], env=env)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - tic
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"step {name} failed: epitensor {' '.join(args)}")
    row = {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024, "disk_bytes": du(measure)}
    print(f"{name:8s} {seconds:8.1f} s  peak RSS {row['peak_rss_bytes'] / 1e9:5.2f} GB  "
          f"disk {row['disk_bytes'] / 1e6:8.1f} MB", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("pretrained-path"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny factor sizes, same path")
    args = parser.parse_args()
    from epitensor._utils import cpu_summary
    from epitensor.genome.coordinates import chrom_sizes, n_bins

    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    site = out / "site"
    tic = time.perf_counter()
    make_site(site, args.quick)
    print(f"model files written in {time.perf_counter() - tic:.0f} s", flush=True)
    httpd, url = serve(site)
    write_record(site, url)
    cache = out / "cache"
    env = {**os.environ, "EPITENSOR_CACHE": str(cache), "EPITENSOR_ZENODO_API": f"{url}/api",
           "EPITENSOR_MODELS_URL": f"{url}/lab", "PYTHONPATH": str(REPO / "src")}  # fmt: skip
    for old in ("mine.zarr", "extended", "imputed"):
        subprocess.run(["rm", "-rf", str(out / old)], check=True)
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    manifest = write_bigwigs(out)
    steps = {
        "pull": run_step(
            "pull", ["models", "pull", "roadmap-hg19", "--chrom", CHROM, "-q"], env, cache
        ),  # fmt: skip
        "ingest": run_step(
            "ingest",
            ["ingest", str(manifest), "--out", str(out / "mine.zarr"), "--genome", "hg19", "-q"],
            env,
            out / "mine.zarr",
        ),  # fmt: skip
        "extend": run_step(
            "extend",
            [
                "extend",
                "roadmap-hg19",
                str(out / "mine.zarr"),
                "--celltype",
                "MyCells",
                "--epochs",
                str(args.epochs),
                "--out",
                str(out / "extended"),
                "-q",
            ],
            env,
            out / "extended",
        ),  # fmt: skip
        "impute": run_step(
            "impute",
            [
                "impute",
                str(out / "extended"),
                "--celltype",
                "MyCells",
                "--assay",
                "H3K27ac",
                "--chrom",
                CHROM,
                "--out",
                str(out / "imputed" / "MyCells.H3K27ac.bigWig"),
                "-q",
            ],
            env,
            out / "imputed",
        ),  # fmt: skip
    }
    httpd.shutdown()
    sizes = chrom_sizes("hg19")
    chrom_bins = n_bins(int(sizes[CHROM]))
    genome_bins = sum(n_bins(int(sizes[c])) for c in ROADMAP_CHROMS)
    steps["pull"]["download_bytes"] = du(site / "lab")
    result = {"cpu": cpu_summary(), "quick": args.quick, "epochs": args.epochs,
              "chrom_positions": chrom_bins, "genome_positions": genome_bins,
              "scale": genome_bins / chrom_bins, "steps": steps}  # fmt: skip
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"CPU: {cpu_summary()}")
    print(f"download {steps['pull']['download_bytes'] / 1e9:.3f} GB for {CHROM}; genome x"
          f"{result['scale']:.1f} ({genome_bins:,} positions, chr1-22)")  # fmt: skip
    for name, row in steps.items():
        print(f"genome   {name:8s} ~{row['seconds'] * result['scale'] / 60:8.1f} min  "
              f"~{row['disk_bytes'] * result['scale'] / 1e9:7.2f} GB")  # fmt: skip


if __name__ == "__main__":
    main()
