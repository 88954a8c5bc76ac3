"""The ``epitensor`` command line: parses options and calls one public function per command."""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from epitensor import __version__
from epitensor._utils import EpitensorError, passive_openmp_wait
from epitensor.evaluation.options import (
    DEFAULT_CV_BASELINES,
    BenchmarkOptions,
    CVOptions,
    DownstreamOptions,
    TuneOptions,
)
from epitensor.store.options import IngestOptions
from epitensor.workflows.options import (
    AUTO_ENSEMBLE,
    AnnotateOptions,
    ImputeOptions,
    TrainOptions,
)

passive_openmp_wait()  # before any command imports torch

# The defaults of the jobs' options, declared once in their options classes (light modules:
# no numpy, no torch, so --help stays quick).
_INGEST = IngestOptions()
_TRAIN = TrainOptions()
_IMPUTE = ImputeOptions()
_ANNOTATE = AnnotateOptions()
_BENCHMARK = BenchmarkOptions()
_CV = CVOptions()
_TUNE = TuneOptions()
_DOWNSTREAM = DownstreamOptions()

app = typer.Typer(
    name="epitensor",
    help="Multi-scale deep tensor factorization of the epigenome (the Avocado method).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Shared option aliases (declared once, reused by every command).
StoreArg = Annotated[
    str, typer.Argument(help="Store path or fsspec URL; 'roadmap-pilot' is the bundled sample.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
AllowChangedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-changed-store",
        help="Use a store whose copies of the model's tracks hold other values than the data "
        "the model was made from, with a warning (default: refuse it; a store on other "
        "coordinates is refused either way).",
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="torch device (cpu, cuda, mps); default: best available."),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run the work as Ray tasks: 'local' (start Ray here), 'auto' (join this "
        "machine's cluster) or a Ray address; needs Ray (the 'ray' extra of epitensor). "
        "Default: in this process.",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads for torch; default: the CPUs this process may use (affinity, quota).",
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"epitensor {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Learn a latent representation of the epigenome and impute missing experiments."""


@contextlib.contextmanager
def _writing(
    out: Path | None,
    overwrite: bool,
    option: str = "--out",
    new: bool = True,
    wait: bool | None = None,
    inputs: tuple = (),
    kind: str | None = None,
) -> Iterator[None]:
    """Refuse an existing output unless ``--overwrite``; hold its write lock meanwhile.

    Parameters
    ----------
    out : pathlib.Path or None
        The command's output (None: nothing to do).
    overwrite : bool
        The command's ``--overwrite``.
    option : str
        The option naming ``out``, for the message. Default ``"--out"``.
    new : bool
        Refuse an existing ``out``. Default True. False for outputs that may
        exist (a folder receiving new files, a store appended to).
    wait : bool, optional
        Wait for another process writing ``out``. Default None: when
        ``overwrite`` or not ``new`` (else that process's result would only be
        refused); otherwise fail at once.
    inputs : tuple
        The command's inputs (paths, prefixes, URLs, None): ``out`` must not be,
        hold or lie in one. Default: none.
    kind : {"store", "model"}, optional
        What the command writes: ``--overwrite`` replaces only an output of
        that kind (or an empty folder), never a model by a store, say (trial
        L2). Default None: not checked.
    """
    from epitensor._utils import output_lock

    if out is None:
        yield
        return

    def refuse() -> None:
        if new and out.exists() and not overwrite:
            raise EpitensorError(
                f"{out} already exists; pass --overwrite to replace it or choose another {option}"
            )

    refuse()
    for given in inputs:
        _refuse_own_input(out, given, option)
    if overwrite and kind is not None:
        _refuse_other_kind(out, kind, option)
    with output_lock(out, wait=(overwrite or not new) if wait is None else wait):
        refuse()  # it may have appeared while this process waited
        yield


@contextlib.contextmanager
def _reading(model) -> Iterator[None]:
    """Hold the shared lock of a model directory while the command reads it (trial W1).

    ``train --out MODEL --overwrite`` started meanwhile waits until the command
    is done; one already writing MODEL makes the command fail at once, in one
    line. Anything but an existing directory (a name, a URL) is not locked.
    """
    from epitensor._utils import read_lock

    if model is None or not Path(str(model)).is_dir():
        yield
        return
    with read_lock(Path(str(model))):
        yield


_KIND_FILES = {"store": "zarr.json", "model": "config.json"}


def _refuse_other_kind(out: Path, kind: str, option: str) -> None:
    """Refuse to ``--overwrite`` anything but a ``kind`` or an empty folder (trial L2).

    ``ingest --out MODEL --overwrite`` replaced a model by a store.
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if out.is_dir() and (out / _KIND_FILES[kind]).is_file():
        return
    held = next((k for k, f in _KIND_FILES.items() if (out / f).is_file()), None)
    what = f"a {held}" if held else ("a file" if not out.is_dir() else "a folder of other files")
    raise EpitensorError(
        f"{option} {out} holds {what}, not a {kind}; --overwrite replaces only a {kind}: "
        f"choose another {option}, or remove it first if it is no longer needed"
    )


def _refuse_own_input(out: Path, given, option: str) -> None:
    """Refuse an output that is, holds or lies in one of the command's inputs (trial L2).

    ``train S --out S --overwrite`` replaced the store it trained on by the model.
    ``given`` is a path, or a prefix of files (``import-reference``); URLs and
    names of bundled data are not paths on this machine and pass.
    """
    if given is None or "://" in str(given):
        return
    path = Path(str(given))
    found = [path] if path.exists() else list(path.parent.glob(glob.escape(path.name) + "*"))
    target = out.resolve()
    for item in found:
        item = item.resolve()
        if target == item or target in item.parents or item in target.parents:
            raise EpitensorError(
                f"{option} {out} is, holds or lies in the command's input {given}; writing "
                f"there would destroy it: choose another {option}"
            )


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` lies in ``folder`` (after resolving links)."""
    return folder.resolve() in path.resolve().parents


def user_errors(func):
    """Print an :class:`EpitensorError` as one line on stderr and exit 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EpitensorError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@app.command()
@user_errors
def ingest(
    manifest: Annotated[
        Path, typer.Argument(help="TSV: celltype, assay, path[, md5, scale]; header required.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Store folder to create (or append to).")],
    genome: Annotated[
        str, typer.Option("--genome", help="hg19, hg38, mm10 or a chrom.sizes file.")
    ] = _INGEST.genome,
    regions: Annotated[
        str | None,
        typer.Option(
            "--regions",
            help="BED of regions (one concatenated axis) or 'roadmap-pilot'; "
            "default: whole chromosomes the tracks cover.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Worker processes; default: CPU count.")
    ] = None,
    append: Annotated[
        bool, typer.Option("--append", help="Add the tracks to the existing store at --out.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing store at --out.")
    ] = False,
    scratch: Annotated[
        Path | None,
        typer.Option(
            "--scratch",
            help="Folder for downloaded track files; default: a scratch folder beside --out.",
        ),
    ] = None,
    download_timeout: Annotated[
        float,
        typer.Option("--download-timeout", help="Seconds all downloads together may take."),
    ] = _INGEST.download_timeout,
    max_download: Annotated[
        str,
        typer.Option("--max-download", help="Largest file downloaded: bytes or 500M, 16G, ..."),
    ] = f"{_INGEST.max_download >> 30}G",
    ray: RayOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Bin bigWig / bedGraph / wig / npz tracks to 25 bp, arcsinh them, and write a store.

    Example: epitensor ingest tracks.tsv --out compendium.zarr --genome hg19
    """
    from epitensor.store.ingest import ingest as run_ingest

    if out.exists() and not (append or overwrite):
        raise EpitensorError(f"{out} already exists; pass --append, --overwrite or another --out")
    with _writing(out, overwrite, new=False, wait=append or overwrite, inputs=(manifest, regions),
                  kind="store"):  # fmt: skip
        options = IngestOptions(
            genome=genome,
            regions=regions,
            workers=workers,
            verbose=not quiet,
            append=append,
            overwrite=overwrite,
            ray_address=ray,
            scratch=scratch,
            download_timeout=download_timeout,
            max_download=max_download,
        )
        store = run_ingest(manifest, out, options=options)
    typer.echo(store.summary())


@app.command()
@user_errors
def info(
    store: StoreArg,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Read every chunk and verify its checksum; list missing or corrupt "
            "chunks and exit 1 if there are any.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Summarise a store: genome, axes, tracks, the observed matrix, size on disk.

    Example: epitensor info roadmap-pilot --check
    """
    from epitensor.store.registry import open_store

    opened = open_store(store)
    typer.echo(opened.summary())
    if check:
        result = opened.verify(verbose=not quiet)
        typer.echo("\n" + result.summary())
        if not result.ok:
            changed = f" and {len(result.changed)} changed tracks" if result.changed else ""
            typer.echo(
                f"error: store {opened.url} has {len(result.missing)} missing and "
                f"{len(result.corrupt)} corrupt chunks{changed}; re-ingest it",
                err=True,
            )
            sys.exit(1)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-output"),
    quick: Annotated[
        bool, typer.Option("--quick", help="The same pipeline in about a minute (tiny model).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into an existing OUT, replacing its files.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the demo on the bundled real Roadmap sample: benchmark, imputations, figures, report.

    Example: epitensor demo --out demo-output
    """
    from epitensor.demo import run_demo

    with _writing(out, overwrite):
        report = run_demo(out, quick=quick, verbose=not quiet)
    typer.echo(f"report: {report}")


def _writable_dir(path: Path) -> Path:
    """Raise a BadParameter before any work when ``path``'s parent cannot be written."""
    parent = path.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not parent.is_dir() or not __import__("os").access(parent, __import__("os").W_OK):
        raise typer.BadParameter(f"cannot write to {parent}")
    return path


@app.command()
@user_errors
def explain(
    model: Annotated[Path, typer.Argument(help="Model directory (from `epitensor train`).")],
    celltype: Annotated[
        list[str], typer.Option("--celltype", help="Cell type; repeat once to compare two.")
    ],
    assay: Annotated[str, typer.Option("--assay", help="Assay to explain.")],
    region: Annotated[
        str, typer.Option("--region", help="CHR:START-END (bp, 0-based half-open), in the layout.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Figure to write (PNG).")],
    tsv: Annotated[
        Path | None, typer.Option("--tsv", help="Also write the attribution table (TSV).")
    ] = None,
    reference: Annotated[
        str, typer.Option("--reference", help="Reference input: mean (factor means) or zero.")
    ] = "mean",
    steps: Annotated[int, typer.Option("--steps", help="Integration steps (>= 2).")] = 64,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing OUT and TSV.")
    ] = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Integrated-gradients attributions of an imputed track, split by model component.

    Example: epitensor explain MODEL --celltype E116 --celltype E117 --assay H3K4me3
    --region chr11:65,490,000-65,500,000 --out explain.png --tsv explain.tsv
    """
    from epitensor.workflows.explain import write_explanation

    if tsv is not None and tsv.absolute() == out.absolute():  # trial C7: the TSV replaced the PNG
        raise typer.BadParameter(f"--tsv {tsv} is the figure's --out; give the table its own file")
    with _reading(model), _writing(out, overwrite), _writing(tsv, overwrite, option="--tsv"):
        write_explanation(
            model,
            celltype,
            assay,
            region,
            _writable_dir(out),
            tsv=None if tsv is None else _writable_dir(tsv),
            reference=reference,
            n_steps=steps,
            device=device,
            verbose=not quiet,
        )
    typer.echo(f"wrote {out}" + ("" if tsv is None else f" and {tsv}"))


def _track_option(value: str) -> str:
    if value.count(":") != 1 or value.startswith(":") or value.endswith(":"):
        raise typer.BadParameter(f"expected CELL:ASSAY, got {value!r}")
    return value


@app.command()
@user_errors
def train(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="Hyperparameters: cpu-small, paper, or a JSON file of parameters (epitensor tune).",
        ),
    ] = _TRAIN.preset,
    holdout: Annotated[
        list[str] | None,
        typer.Option(
            "--holdout",
            help="CELL:ASSAY left out and scored each epoch (repeat).",
            parser=_track_option,
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Stage-1 epochs (default: the preset's).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT.checkpoint/ after a crash.")
    ] = False,
    regions: Annotated[
        str | None,
        typer.Option(
            "--regions",
            help="Where stage 1 trains: all, pilot (ENCODE pilot regions, hg19) or a BED "
            "file. Default: all positions of stores up to 20M positions, else pilot.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a model on a store (stage 1), with per-epoch checkpoints, and save it.

    Example: epitensor train roadmap-pilot --out model --preset cpu-small
    --holdout E003:H3K4me3 --holdout E116:H3K27me3
    """
    from epitensor.workflows.training import train_model

    with _writing(out, overwrite, inputs=(store,), kind="model"):
        options = TrainOptions(
            preset=preset,
            holdout=holdout or (),
            n_epochs=epochs,
            resume=resume,
            regions=regions,
            device=device,
            n_threads=threads,
            verbose=not quiet,
            overwrite=overwrite,
        )
        model = train_model(store, _writable_dir(out), options=options)
    last = model.history_.iloc[-1]
    holdout_mse = (  # trial C8: "holdout MSE nan" when nothing was held out
        f"holdout MSE {model.holdout_mse_:.4f}" if model.holdout_tracks_ else "no holdout"
    )
    typer.echo(
        f"wrote {out}: {int(last.epoch)} epochs, train MSE {last.train_mse:.4f}, {holdout_mse}"
    )


ModelArg = Annotated[Path, typer.Argument(help="Model directory (from `epitensor train`).")]
ModelOrNameArg = Annotated[
    Path,
    typer.Argument(
        help="Model directory, or a published model's name (`epitensor models list`), "
        "pulled into the cache ($EPITENSOR_CACHE) with only the chromosomes needed."
    ),
]


@app.command()
@user_errors
def impute(
    model: ModelOrNameArg,
    out: Annotated[
        Path, typer.Option("--out", help="FILE.bw / FILE.bedGraph for one track, else a folder.")
    ],
    celltype: Annotated[
        list[str] | None,
        typer.Option("--celltype", help="Cell type (repeat, paired with --assay)."),
    ] = None,
    assay: Annotated[
        list[str] | None, typer.Option("--assay", help="Assay (repeat, paired with --celltype).")
    ] = None,
    all_missing: Annotated[
        str | None,
        typer.Option("--all-missing", metavar="STORE", help="Every pair STORE does not hold."),
    ] = None,
    chrom: Annotated[
        list[str] | None, typer.Option("--chrom", help="Only this chromosome (repeat).")
    ] = None,
    region: Annotated[
        list[str] | None,
        typer.Option("--region", help="Only CHR:START-END (bp, 0-based half-open; repeat)."),
    ] = None,
    arcsinh: Annotated[
        bool, typer.Option("--arcsinh", help="Write arcsinh values (default: -log10 p).")
    ] = _IMPUTE.arcsinh,
    bedgraph: Annotated[
        bool, typer.Option("--bedgraph", help="Write bedGraph, not bigWig.")
    ] = False,
    precision: Annotated[
        str,
        typer.Option("--precision", help="fp32, or bf16 (faster on bf16 hardware, ~1e-2 error)."),
    ] = _IMPUTE.precision,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace existing files (default: keep those an earlier run of the same "
            "imputation finished, write the rest).",
        ),
    ] = _IMPUTE.overwrite,
    track_batch: Annotated[
        int,
        typer.Option("--track-batch", min=1, help="Tracks computed (and files written) together."),
    ] = _IMPUTE.track_batch,
    trees: Annotated[
        list[str] | None,
        typer.Option(
            "--trees",
            metavar="STORE",
            help="Fit the ensemble's trees and average activity on STORE's copies of the "
            "model's training tracks (repeat for tracks spread over stores of one layout; "
            "default: the compendium the model records, if it still opens and holds them; "
            "else the model alone).",
        ),
    ] = None,
    model_only: Annotated[
        bool,
        typer.Option(
            "--model-only", help="Write the model alone, not the ensemble with trees and average."
        ),
    ] = False,
    allow_changed_store: AllowChangedOpt = False,
    interval: Annotated[
        list[float] | None,
        typer.Option(
            "--interval",
            metavar="LEVEL",
            help="Also write each track's central prediction interval at LEVEL in (0, 1) "
            "beside it, as CELL.ASSAY.lowerNN / .upperNN files (repeat for several levels; "
            "needs the ensemble; calibrated once per model, kept in the model directory).",
        ),
    ] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    ray: RayOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Impute tracks genome-wide (or on --chrom / --region) as bigWig or bedGraph, 25 bp.

    Writes the ensemble of the model, ChromImpute-style trees and average activity
    (the best imputation under cross-validation) when the model's training compendium
    is at hand, else the model alone; --model-only always writes the model alone.

    Example: epitensor impute model --celltype E065 --assay H3K4me1 --out E065.H3K4me1.bw

    With --interval 0.9: also E065.H3K4me1.lower90.bw and E065.H3K4me1.upper90.bw.
    """
    from epitensor.estimators.intervals import interval_path
    from epitensor.workflows.impute import impute as run_impute

    celltype, assay = celltype or [], assay or []
    if len(celltype) != len(assay):
        raise typer.BadParameter(
            f"give --celltype and --assay in pairs; got {len(celltype)} and {len(assay)}"
        )
    if model_only and trees:
        raise typer.BadParameter("--model-only writes no ensemble; drop --trees or --model-only")
    if not celltype and all_missing is None:
        raise typer.BadParameter("give --celltype C --assay A (repeatable) or --all-missing STORE")
    levels = sorted(set(interval or []))
    if any(not 0 < level < 1 for level in levels):
        raise typer.BadParameter(f"--interval takes levels in (0, 1), e.g. 0.9; got {levels}")
    if levels and model_only:
        raise typer.BadParameter("--interval is calibrated for the ensemble; drop --model-only")
    options = ImputeOptions(
        arcsinh=arcsinh,
        fmt="bedgraph" if bedgraph else _IMPUTE.fmt,
        precision=precision,
        overwrite=overwrite,
        verbose=not quiet,
        track_batch=track_batch,
        device=device,
        n_threads=threads,
        ray_address=ray,
        # the command writes the ensemble when it can; --model-only (or the API's default) not
        trees_store=None if model_only else (trees or AUTO_ENSEMBLE),
        allow_changed_store=allow_changed_store,
        interval=tuple(levels),
    )
    needed = chrom or [r.split(":", 1)[0] for r in region or []]
    with _writing(out, overwrite, new=False):
        model = _model_or_name(model, needed, quiet=quiet)
        with _reading(model):
            paths = run_impute(
                model,
                list(zip(celltype, assay)),
                _writable_dir(out),
                chroms=chrom,
                regions=region,
                missing_in=all_missing,
                options=options,
            )
    bounds = [interval_path(p, b, x) for p in paths for x in levels for b in ("lower", "upper")]
    typer.echo("\n".join(f"wrote {p}" for p in [*paths, *bounds]))


@app.command("fit-genome")
@user_errors
def fit_genome(
    model: ModelArg,
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    axis: Annotated[
        list[str] | None,
        typer.Option("--axis", help="Only this axis / chromosome (repeat); default: all."),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", min=1, help="Stage-2 epochs per axis (default: the model's)."),
    ] = None,
    ray: RayOpt = None,
    gpus_per_task: Annotated[
        float | None,
        typer.Option("--gpus-per-task", help="With --ray; default: 1 if the cluster has GPUs."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
    allow_changed_store: AllowChangedOpt = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Stage 2: learn the genome factors of each chromosome of STORE, the rest frozen.

    One task per chromosome, in this process or on Ray (--ray).
    Example: epitensor fit-genome model genome.zarr --out model-genome --ray auto
    """
    from epitensor.workflows.training import train_genome

    with _reading(model), _writing(out, overwrite, inputs=(model, store), kind="model"):
        fitted = train_genome(
            model,
            store,
            _writable_dir(out),
            axes=axis,
            n_epochs=epochs,
            ray_address=ray,
            num_gpus=gpus_per_task,
            device=device,
            verbose=not quiet,
            overwrite=overwrite,
            allow_changed=allow_changed_store,
        )
    typer.echo(f"wrote {out}: genome factors of {len(fitted.genome_axes_)} axes")


@app.command()
@user_errors
def embed(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the factors to.")],
    regions: Annotated[
        Path | None, typer.Option("--regions", help="BED: one feature row per region.")
    ] = None,
    window: Annotated[
        int | None,
        typer.Option("--window", min=1, help="With --regions: N 250-bp bins around each midpoint."),
    ] = None,
    axis: Annotated[
        list[str] | None, typer.Option("--axis", help="Only this axis (repeat).")
    ] = None,
    npz: Annotated[bool, typer.Option("--npz", help="Genome factors as .npz, not Zarr.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the latent factors: genome (per 25-bp bin or per BED region), cell types, assays.

    Example: epitensor embed model --out factors --regions tss.bed --window 8
    """
    from epitensor.workflows.impute import embed as run_embed

    with _reading(model), _writing(out, overwrite, inputs=(model, regions)):
        path = run_embed(
            model,
            _writable_dir(out),
            regions=regions,
            window=window,
            axes=axis,
            fmt="npz" if npz else "zarr",
            overwrite=overwrite,
            verbose=not quiet,
        )
    typer.echo(f"wrote {path}")


@app.command()
@user_errors
def annotate(
    model: ModelArg,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="BED9 to write; the tables (.enrichment.tsv, .signal.tsv), heatmaps (.png) "
            "and parameters (.json) go beside it.",
        ),
    ],
    states: Annotated[
        int, typer.Option("--states", help="Number of states K (>= 2).")
    ] = _ANNOTATE.n_states,
    celltype: Annotated[
        str | None,
        typer.Option(
            "--celltype",
            help="Cell type-specific states, from the model's imputed tracks of this cell "
            "type for every assay; default: cell type-independent, from the genome factors.",
        ),
    ] = None,
    axis: Annotated[
        list[str] | None, typer.Option("--axis", help="Only this axis (repeat).")
    ] = None,
    annotations: Annotated[
        Path | None,
        typer.Option(
            "--annotations",
            help="Folder of annotations to score the states against (TSS, genes, CpG "
            "islands, *_chromhmm*.bed.gz); default: the bundled pilot annotations.",
        ),
    ] = None,
    components: Annotated[
        int, typer.Option("--components", help="Principal components the HMM sees.")
    ] = _ANNOTATE.n_components,
    sample: Annotated[
        int, typer.Option("--sample", help="Bins the HMM is fitted on (windows of 2,000).")
    ] = _ANNOTATE.sample_size,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the sample and the HMM.")
    ] = _ANNOTATE.seed,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Segment the genome into K chromatin states from the latent space (Gaussian HMM).

    Example: epitensor annotate model --states 10 --out states.bed --celltype E116
    """
    from epitensor.workflows.annotate import annotate as run_annotate

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    options = AnnotateOptions(
        n_states=states,
        celltype=celltype,
        axes=axis,
        annotations=annotations,
        n_components=components,
        sample_size=sample,
        seed=seed,
        device=device,
        verbose=not quiet,
        overwrite=overwrite,
    )
    with _reading(model):
        result = run_annotate(model, _writable_dir(out), options=options)
    typer.echo(f"wrote {out} ({result.n_states} states) and its tables and heatmaps beside it")


@app.command()
@user_errors
def extend(
    model: ModelOrNameArg,
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", help="New model directory (MODEL is untouched).")],
    celltype: Annotated[
        list[str] | None, typer.Option("--celltype", help="New cell type (repeat).")
    ] = None,
    assay: Annotated[list[str] | None, typer.Option("--assay", help="New assay (repeat).")] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs", min=1, help="Transfer epochs (default: the model's genome epochs)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
    allow_changed_store: AllowChangedOpt = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Add cell types or assays to a trained model from their tracks in STORE.

    Example: epitensor extend model roadmap-pilot --celltype E065 --out model-e065
    """
    from epitensor.workflows.extend import extend as run_extend

    if bool(celltype) == bool(assay):
        raise typer.BadParameter("give --celltype ... or --assay ... (one kind per call)")
    with _writing(out, overwrite, kind="model"):
        model = _model_or_name(model, store=store, quiet=quiet)
        with _reading(model):
            extended = run_extend(
                model,
                store,
                _writable_dir(out),
                celltypes=celltype or [],
                assays=assay or [],
                n_epochs=epochs,
                device=device,
                overwrite=overwrite,
                verbose=not quiet,
                allow_changed=allow_changed_store,
            )
    last = extended.history_.iloc[-1]
    typer.echo(f"wrote {out}: transfer train MSE {last.train_mse:.4f}")


@app.command()
@user_errors
def downstream(
    features: Annotated[
        list[str],
        typer.Option("--features", help="NAME=FILE (.npy, .npz or .tsv; samples x features)."),
    ],
    labels: Annotated[Path, typer.Option("--labels", help="Labels (.npy; one per sample).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    model: Annotated[
        str, typer.Option("--model", help="xgboost (paper's default) or logistic.")
    ] = _DOWNSTREAM.model,
    folds: Annotated[int, typer.Option("--folds", help="Folds per repeat.")] = _DOWNSTREAM.n_folds,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Repeats, reshuffled.")
    ] = _DOWNSTREAM.n_repeats,
    regression: Annotated[
        bool, typer.Option("--regression", help="Continuous labels: Pearson r and R².")
    ] = False,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Labels >= THRESHOLD are positive.")
    ] = None,
    n_samples: Annotated[
        int | None, typer.Option("--n-samples", help="Use the first N rows of every file.")
    ] = None,
    n_estimators: Annotated[
        int, typer.Option("--n-estimators", help="XGBoost's most trees.")
    ] = _DOWNSTREAM.n_estimators,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of folds and models.")
    ] = _DOWNSTREAM.seed,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Compare feature sets by cross-validation on the same folds (MAP, paired t-tests).

    Example: epitensor downstream --features roadmap=X1.npy --features avocado=X2.npy
    --labels y.npy --threshold 0.5 --out results
    """
    from epitensor.evaluation.downstream import MODELS, run_downstream

    if model not in MODELS:
        raise typer.BadParameter(f"invalid --model: got {model!r}, expected one of {MODELS!r}")
    with _writing(out, overwrite):
        options = DownstreamOptions(
            model=model,
            n_folds=folds,
            n_repeats=repeats,
            regression=regression,
            threshold=threshold,
            n_samples=n_samples,
            seed=seed,
            n_estimators=n_estimators,
            threads=threads,
            overwrite=overwrite,
            verbose=not quiet,
        )
        result = run_downstream(features, labels, _writable_dir(out), options=options)
    typer.echo(result.to_markdown())
    typer.echo(f"wrote {out}")


def _first_bins(values: list[str] | None) -> int | dict[str, int] | None:
    """``--first-bin`` values: one ``N`` for every file, or ``CHR:N`` per chromosome."""
    if not values:
        return None
    try:
        if len(values) == 1 and ":" not in values[0]:
            return int(values[0])
        return {chrom: int(n) for chrom, n in (v.split(":", 1) for v in values)}
    except ValueError:
        raise typer.BadParameter(
            f"invalid --first-bin: got {values!r}, expected N or CHR:N (25-bp bins)"
        ) from None


@app.command("import-reference")
@user_errors
def import_reference(
    prefix: Annotated[
        list[str],
        typer.Argument(
            help="Model files of the original Avocado: PREFIX of avocado-chrN.{json,h5}, "
            "a folder, or the files (repeat)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="epitensor model directory to write.")],
    genome: Annotated[
        str, typer.Option("--genome", help="Build the model was trained on, or CHROM.SIZES.")
    ] = "hg19",
    first_bin: Annotated[
        list[str] | None,
        typer.Option(
            "--first-bin",
            help="Model trained on a slice: chromosome bin (25 bp) of position 0, "
            "N or CHR:N (repeat). Default: whole chromosomes.",
        ),
    ] = None,
    chrom: Annotated[
        list[str] | None, typer.Option("--chrom", help="Only this chromosome (repeat).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert a model trained by the original Avocado (Keras .json + .h5 per chromosome).

    Example: epitensor import-reference models/avocado --genome hg19 --out roadmap-model
    """
    from epitensor.workflows.reference import import_reference_to_directory

    with _writing(out, overwrite, inputs=tuple(prefix), kind="model"):
        model = import_reference_to_directory(
            prefix,
            _writable_dir(out),
            genome=genome,
            first_bin=_first_bins(first_bin),
            chroms=chrom,
            overwrite=overwrite,
            verbose=not quiet,
        )
    typer.echo(
        f"wrote {out}: {len(model.celltypes_)} cell types, {len(model.assays_)} assays, "
        f"axes {', '.join(model.genome_axes_)}"
    )


def _model_or_name(
    model: Path, chroms: list[str] | None = None, store: str | None = None, quiet: bool = False
) -> Path:
    """``model`` itself, or the published model of that name pulled with the chromosomes needed.

    ``chroms`` are those to impute (None or empty: all); with ``store`` (``extend``),
    those of the store's layout.
    """
    from epitensor.io.hub import registry
    from epitensor.workflows.pretrained import resolve_model, store_chroms

    if model.exists() or str(model) not in registry():
        return model  # a directory, or not a name: the command's own checks speak
    if store is not None:
        chroms = store_chroms(str(model), store)
    return resolve_model(str(model), chroms or None, verbose=not quiet)


models_app = typer.Typer(
    help="The published models of the original Avocado: list, show, pull into the cache.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache", help="Cache folder (default: $EPITENSOR_CACHE, else the platform's user cache)."
    ),
]


@models_app.command("list")
@user_errors
def models_list(cache: CacheOpt = None) -> None:
    """Every published model: genome, chromosomes, cell types, assays, source, what is cached.

    Example: epitensor models list
    """
    from epitensor.workflows.pretrained import list_models

    typer.echo(list_models(cache))


@models_app.command("show")
@user_errors
def models_show(
    name: Annotated[str, typer.Argument(help="Registry name (`epitensor models list`).")],
    cache: CacheOpt = None,
) -> None:
    """One published model: paper, genome, chromosomes, URLs, cell types, assays, cache.

    Example: epitensor models show roadmap-hg19
    """
    from epitensor.workflows.pretrained import describe_model

    typer.echo(describe_model(name, cache))


@models_app.command("pull")
@user_errors
def models_pull(
    name: Annotated[str, typer.Argument(help="Registry name (`epitensor models list`).")],
    chrom: Annotated[
        list[str] | None,
        typer.Option("--chrom", help="Only this chromosome (repeat; default: all)."),
    ] = None,
    cache: CacheOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds all downloads may take.")
    ] = 4 * 3600.0,
    max_download: Annotated[
        str, typer.Option("--max-download", help="Largest file accepted (such as 16G).")
    ] = "16G",
    verify: Annotated[
        bool, typer.Option("--verify", help="Hash the files already in the cache again.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Download, verify and convert a published model (resumes an interrupted pull).

    Example: epitensor models pull roadmap-hg19 --chrom chr21
    """
    from epitensor.io.fetch import parse_size
    from epitensor.workflows.pretrained import pull_model

    result = pull_model(
        name,
        chrom,
        cache,
        timeout=timeout,
        max_bytes=parse_size(max_download),
        verify=verify,
        verbose=not quiet,
    )
    typer.echo(result.summary())


@app.command()
@user_errors
def evaluate(
    model: ModelArg,
    store: StoreArg,
    tracks: Annotated[
        list[str],
        typer.Option(
            "--tracks", help="Observed CELL:ASSAY to score (repeat).", parser=_track_option
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Long-format metrics CSV to write.")],
    annotations: Annotated[
        Path | None,
        typer.Option("--annotations", help="Annotation folder (default: bundled hg19 pilot)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing OUT.")
    ] = False,
    trees: Annotated[
        list[str] | None,
        typer.Option(
            "--trees",
            metavar="STORE",
            help="Fit the ensemble's trees and average activity on STORE, as `impute --trees` "
            "(default: as `impute` does, the compendium the model records if it still opens).",
        ),
    ] = None,
    model_only: Annotated[
        bool,
        typer.Option(
            "--model-only", help="Score the model alone, as `impute --model-only` writes."
        ),
    ] = False,
    allow_changed_store: AllowChangedOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score what `epitensor impute` writes for observed tracks, and its parts (every metric).

    Method `epitensor` is the file `impute` writes by default (the ensemble of the
    model, ChromImpute-style trees and average activity, or the model alone when the
    model's compendium is gone); `avocado` is the model alone; `chromimpute_gbt` and
    `average_activity` the ensemble's other parts.

    Example: epitensor evaluate model roadmap-pilot --tracks E003:H3K4me3 --out metrics.csv
    """
    from epitensor.evaluation.benchmark import evaluate_model

    if model.is_dir() and _inside(out, model):
        raise typer.BadParameter(f"--out {out} lies inside the model directory {model}")
    if model_only and trees:
        raise typer.BadParameter("--model-only scores no ensemble; drop --trees or --model-only")
    with _reading(model), _writing(out, overwrite):
        table = evaluate_model(
            model,
            store,
            [tuple(t.split(":")) for t in tracks],
            _writable_dir(out),
            annotations=annotations,
            verbose=not quiet,
            overwrite=overwrite,
            allow_changed=allow_changed_store,
            trees_store=None if model_only else (trees or AUTO_ENSEMBLE),
        )
    wide = table.pivot_table(
        index="metric", columns=["celltype", "assay", "method"], values="value", sort=False
    )
    typer.echo(wide.to_string(float_format="%.4f"))
    typer.echo(f"wrote {out}")


def _seeds_option(values: list[str] | None) -> list[int]:
    """Seeds from repeated and/or comma-separated values (``--training-seeds 0,1,2``)."""
    seeds = []
    for value in values or []:
        for part in value.replace(",", " ").split():
            try:
                seeds.append(int(part))
            except ValueError:
                raise typer.BadParameter(
                    f"invalid training seed: got {part!r}, expected integers such as 0,1,2"
                ) from None
    return seeds or list(_CV.training_seeds)


@app.command()
@user_errors
def benchmark(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for the tables and figures.")],
    split: Annotated[
        str, typer.Option("--split", help="'standard' or a TSV of held-out celltype, assay.")
    ] = _BENCHMARK.split,
    preset: Annotated[
        list[str] | None,
        typer.Option(
            "--preset",
            help="Model hyperparameters: cpu-small, paper or none; repeat to run several "
            f"side by side (methods avocado-<preset>). Default: {_BENCHMARK.preset}.",
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Model epochs (default: the preset's).")
    ] = None,
    parafac_epochs: Annotated[
        int, typer.Option("--parafac-epochs", min=0, help="Epochs of the PARAFAC baseline.")
    ] = _BENCHMARK.parafac_epochs,
    cv: Annotated[
        int | None,
        typer.Option(
            "--cv",
            min=2,
            help="K-fold cross-validation over every observed track instead of the split.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the CV fold assignment.")] = _CV.seed,
    training_seeds: Annotated[
        list[str] | None,
        typer.Option(
            "--training-seeds",
            help="CV: seeds of the training, comma-separated or repeated (e.g. 0,1,2).",
        ),
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help="CV: baselines to run beside the model (repeat); default "
            f"{', '.join(DEFAULT_CV_BASELINES)}.",
        ),
    ] = None,
    model_only: Annotated[
        bool,
        typer.Option(
            "--model-only",
            help="Score no ensemble: by default the ensemble `impute` writes (model, "
            "ChromImpute-style trees, average activity) is scored as method epitensor.",
        ),
    ] = False,
    bootstraps: Annotated[
        int,
        typer.Option(
            "--bootstraps",
            min=0,
            help="Bootstraps over chromosomes the methods are ranked on by the ENCODE "
            "Imputation Challenge's rule (ranking.csv); 0: no ranking.",
        ),
    ] = _BENCHMARK.bootstraps,
    intervals: Annotated[
        bool,
        typer.Option(
            "--intervals",
            help="Also score the ensemble's prediction intervals (levels 0.5-0.95, calibrated "
            "on each split's training tracks) beside constant-width ones: intervals.csv, "
            "intervals_summary.md, reliability.png (the ensemble's: not with --model-only).",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT.")
    ] = _BENCHMARK.overwrite,
    quiet: QuietOpt = False,
) -> None:
    """Train the model and every baseline on a split, score the held-out tracks side by side.

    Method `epitensor` is what `epitensor impute` writes by default (the ensemble);
    `avocado` the model alone; the others baselines. Every metric overall and per
    assay; the methods ranked by the ENCODE Imputation Challenge's rule. With --cv K, every observed track is held out once over K random folds and
    every method is retrained per fold (and per training seed).

    Example: epitensor benchmark roadmap-pilot --out benchmark --split standard

    Example: epitensor benchmark roadmap-pilot --out cv --cv 5 --seed 1 --training-seeds 0,1,2
    """
    from epitensor.estimators.ensemble import EnsembleRule
    from epitensor.evaluation.benchmark import run_benchmark, run_cv
    from epitensor.evaluation.intervals import SCORER_NAME, interval_scorer

    scorers = {SCORER_NAME: interval_scorer(rule=EnsembleRule())} if intervals else None
    chosen = None if not preset else [p for p in preset if p != "none"]  # None: the default
    model_params = None if epochs is None else {"n_epochs": epochs}
    if cv is None and (training_seeds or methods):
        raise typer.BadParameter("--training-seeds and --method go with --cv")
    if intervals and model_only:
        raise typer.BadParameter("--intervals scores the ensemble's intervals; drop --model-only")
    if cv is not None and split != _BENCHMARK.split:
        raise typer.BadParameter("--split and --cv exclude each other: CV holds out every track")
    with _writing(out, overwrite):
        if cv is None:
            options = BenchmarkOptions(
                split=split,
                preset=_BENCHMARK.preset if chosen is None else (chosen or None),
                model_params=model_params,
                parafac_epochs=parafac_epochs,
                ensemble=None if model_only else _BENCHMARK.ensemble,
                bootstraps=bootstraps,
                overwrite=overwrite,
                verbose=not quiet,
            )
            result = run_benchmark(store, _writable_dir(out), options=options, scorers=scorers)
        else:
            options = CVOptions(
                k=cv,
                seed=seed,
                training_seeds=_seeds_option(training_seeds),
                presets=_CV.presets if chosen is None else chosen,
                model_params=model_params,
                methods=methods or _CV.methods,
                parafac_epochs=parafac_epochs,
                ensemble=None if model_only else _CV.ensemble,
                bootstraps=bootstraps,
                overwrite=overwrite,
                verbose=not quiet,
            )
            result = run_cv(store, _writable_dir(out), options=options, scorers=scorers)
    typer.echo(result.summary_markdown())
    if result.ranking is not None:
        from epitensor.evaluation.benchmark import ranking_markdown

        typer.echo("Ranked by the ENCODE Imputation Challenge's rule:")
        typer.echo(ranking_markdown(result.ranking))
    typer.echo(f"wrote {out}")


@app.command()
@user_errors
def tune(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", help="Folder of the study (continued if there).")],
    trials: Annotated[
        int, typer.Option("--trials", min=1, help="Completed trials the study should hold.")
    ] = _TUNE.n_trials,
    budget: Annotated[
        float,
        typer.Option(
            "--budget",
            min=0.01,
            help="Wall-clock minutes for this run; each trial's training stops at its share.",
        ),
    ] = _TUNE.budget_minutes,
    holdout: Annotated[
        list[str] | None,
        typer.Option(
            "--holdout",
            help="CELL:ASSAY to be reported later, kept out of the search (repeat).",
            parser=_track_option,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the validation draw and sampler.")
    ] = _TUNE.seed,
    space: Annotated[
        Path | None,
        typer.Option(
            "--space",
            help='JSON object of hyperparameter -> values, e.g. {"n_nodes": [256, 512]}. '
            "Default: the grid of the seven structural hyperparameters.",
        ),
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", help="Preset giving every other setting: cpu-small or paper.")
    ] = _TUNE.preset,
    positions: Annotated[
        int, typer.Option("--positions", min=1, help="Positions each trial trains on.")
    ] = _TUNE.positions,
    epochs: Annotated[
        int,
        typer.Option(
            "--epochs",
            min=1,
            help="Epochs of the grid's median configuration: sets every trial's compute "
            "(bigger networks train fewer samples, smaller ones more).",
        ),
    ] = _TUNE.n_epochs,
    trial_budget: Annotated[
        float | None,
        typer.Option(
            "--trial-budget",
            min=1.0,
            help="Multiply-adds each trial trains for (e.g. 1e12), instead of --epochs.",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Random search over the seven structural hyperparameters, scored on validation tracks.

    Every trial trains for the same compute (multiply-adds); with --budget, a
    trial's training also stops at its share of the time left, so --trials
    trials fit in --budget minutes. Writes OUT/best_preset.json (for `epitensor
    train --preset`), trials.csv (epochs trained, seconds, guard stops) and
    importance.png; the study is kept in OUT/study.db, so rerunning continues it.

    Example: epitensor tune roadmap-pilot --trials 20 --budget 30 --out tune
    --holdout E003:H3K4me3 --holdout E116:H3K27me3
    """
    from epitensor.evaluation.tune import tune as run_tune

    options = TuneOptions(
        n_trials=trials,
        budget_minutes=budget,
        holdout=holdout or (),
        space=space,
        preset=preset,
        positions=positions,
        n_epochs=epochs,
        seed=seed,
        n_threads=threads,
        verbose=not quiet,
        trial_budget=trial_budget,
    )
    result = run_tune(store, _writable_dir(out), options=options)
    done = int((result.trials.state == "COMPLETE").sum())
    typer.echo(f"best of {done} trials: validation MSE {result.best_value:.4f}")
    typer.echo(json.dumps(result.best_params, indent=2))
    typer.echo(f"wrote {out / 'best_preset.json'}")


if __name__ == "__main__":  # pragma: no cover
    app()
