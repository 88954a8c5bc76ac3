"""Published Avocado models in one call: pull (download, verify, convert) and use by name.

``pull_model("roadmap-hg19", chroms=["chr21"])`` downloads the original's
``avocado-chr21.json`` + ``.h5`` into the cache (see :mod:`epitensor.io.hub`
for where, and for the checks), converts them with the importer of
:mod:`epitensor.workflows.reference` into an epitensor model directory in the
same cache, and returns it. A second pull of the same chromosomes does
nothing and says so; a pull of more chromosomes downloads only the new ones
and converts again the union, so the cache holds one model directory per
published model. :func:`pretrained` returns the loaded model, and
:func:`resolve_model` lets a registry name stand wherever a model directory
goes (``epitensor impute roadmap-hg19 ...``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from epitensor._utils import EpitensorError, output_lock, progress
from epitensor.io.fetch import DEFAULT_DOWNLOAD_TIMEOUT, DEFAULT_MAX_DOWNLOAD
from epitensor.io.hub import (
    cache_root,
    fetch_file,
    lab_url,
    model_cache,
    published_model,
    read_pins,
    registry,
    remote_files,
    zenodo_api,
)

__all__ = ["PullResult", "cached_chroms", "describe_model", "list_models", "pretrained", "pull_model",
           "resolve_model", "store_chroms"]  # fmt: skip


@dataclass
class PullResult:
    """What :func:`pull_model` did.

    Attributes
    ----------
    name : str
        Registry name.
    path : pathlib.Path
        The epitensor model directory (``Avocado.load(path)``).
    chroms : list of str
        Chromosomes the model directory holds (those asked for and any pulled before).
    files : dict of str to str
        File name to ``"present"``, ``"downloaded"`` or ``"resumed"``.
    converted : bool
        Whether the model directory was (re)written by this pull.
    """

    name: str
    path: Path
    chroms: list[str]
    files: dict[str, str] = field(default_factory=dict)
    converted: bool = False

    def summary(self) -> str:
        """One line for the user."""
        if not self.converted:
            return (
                f"{self.name}: {', '.join(self.chroms)} already pulled and verified in "
                f"{self.path}; nothing to do"
            )
        new = [f for f, how in self.files.items() if how != "present"]
        return (
            f"{self.name}: downloaded and verified {len(new)} file(s), converted "
            f"{', '.join(self.chroms)} into {self.path}"
        )


def _converted_chroms(path: Path) -> list[str]:
    """Chromosomes of the converted model directory (its ``import.json`` axes); [] if none."""
    try:
        return list(json.loads((path / "import.json").read_text(encoding="utf-8"))["axes"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def cached_chroms(name: str, cache: str | os.PathLike | None = None) -> list[str]:
    """Chromosomes of published model ``name`` already converted in the cache (no download).

    Parameters
    ----------
    name : str
        Registry name.
    cache : str or path-like, optional
        Cache folder. Default None: ``$EPITENSOR_CACHE`` or the platform's.

    Returns
    -------
    list of str
        Empty when nothing was pulled.
    """
    return _converted_chroms(cache_root(cache) / "models" / name / "model")


def pull_model(
    name: str,
    chroms: Sequence[str] | None = None,
    cache: str | os.PathLike | None = None,
    *,
    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD,
    verify: bool = False,
    lab: str | None = None,
    zenodo: str | None = None,
    verbose: bool = True,
) -> PullResult:
    """Download, verify and convert a published model's chromosomes into the cache.

    Parameters
    ----------
    name : str
        Registry name (``epitensor models list``), such as ``"roadmap-hg19"``.
    chroms : sequence of str, optional
        Chromosomes to pull. Default None: all of the model's.
    cache : str or path-like, optional
        Cache folder. Default None: ``$EPITENSOR_CACHE``, else the platform's
        user cache folder (``~/.cache/epitensor`` on Linux).
    timeout : float
        Seconds all the downloads of this pull may take. Default 4 hours.
    max_bytes : int
        Largest file accepted. Default 16 GiB.
    verify : bool
        Hash the files already in the cache again. Default False: a cached
        file whose size matches its pinned one is taken as verified.
    lab, zenodo : str, optional
        Base URLs replacing the lab server's models folder and Zenodo's API
        (also ``$EPITENSOR_MODELS_URL`` and ``$EPITENSOR_ZENODO_API``): a mirror.
    verbose : bool
        Progress over the files and the conversion. Default True.

    Returns
    -------
    PullResult
        The model directory and what was done.

    Raises
    ------
    EpitensorError
        An unknown name or chromosome, an unwritable cache, a download that
        failed (run again to resume it) or a file that fails its check.

    Examples
    --------
    >>> import epitensor as et
    >>> result = et.pull_model("roadmap-hg19", chroms=["chr21"])  # doctest: +SKIP
    >>> result.path  # doctest: +SKIP
    PosixPath('/home/me/.cache/epitensor/models/roadmap-hg19/model')
    """
    from epitensor.workflows.reference import import_reference_to_directory

    model = published_model(name)
    wanted = model.check_chroms(chroms)
    folder = model_cache(name, cache)
    target = folder / "model"
    with output_lock(folder):
        have = _converted_chroms(target)
        done = set(wanted) <= set(have) and target.is_dir()
        if done and not verify:
            return PullResult(name, target, have, {}, converted=False)
        union = [c for c in model.chroms if c in set(have) | set(wanted)]
        files = _fetch(model, union, folder, timeout, max_bytes, verify, lab, zenodo, verbose)
        if done:
            return PullResult(name, target, have, files, converted=False)
        staging = folder / ".model.new"
        shutil.rmtree(staging, ignore_errors=True)
        stems = [folder / "original" / f"avocado-{c}" for c in union]
        import_reference_to_directory(
            stems, staging, genome=model.genome, chroms=union, overwrite=True, verbose=verbose
        )
        old = folder / ".model.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    return PullResult(name, target, union, files, converted=True)


def _fetch(model, chroms, folder, timeout, max_bytes, verify, lab, zenodo, verbose):
    """Every file of ``chroms`` verified in ``folder/original``; ``{file: what was done}``."""
    deadline = time.monotonic() + timeout
    pins = read_pins(folder)
    done, needed = {}, []
    for chrom in chroms:
        names = model.file_names(chrom)
        ready = all(
            n in pins and (folder / "original" / n).is_file()
            and (folder / "original" / n).stat().st_size == pins[n]["size"]
            for n in names
        )  # fmt: skip
        if ready and not verify:
            done.update(dict.fromkeys(names, "present"))
        else:
            needed.append(chrom)
    if not needed:
        return done
    remotes = remote_files(model, needed, deadline, lab, zenodo)
    for remote in progress(remotes, total=len(remotes), desc="pull", verbose=verbose, unit="file"):
        done[remote.name] = fetch_file(model, remote, folder, deadline, max_bytes, verify)
    return done


def pretrained(
    name: str,
    chroms: Sequence[str] | None = None,
    cache: str | os.PathLike | None = None,
    **params,
):
    """A published model of the original Avocado, ready to predict or extend.

    Pulls what the cache lacks (see :func:`pull_model`), then loads the converted
    model directory.

    Parameters
    ----------
    name : str
        Registry name, such as ``"roadmap-hg19"`` or ``"encode2018core-hg38"``.
    chroms : sequence of str, optional
        Chromosomes needed. Default None: all of the model's (the whole genome).
    cache : str or path-like, optional
        Cache folder (as for :func:`pull_model`).
    **params
        Estimator hyperparameters for later calls (``device``, ``batch_size``,
        ``n_genome_epochs``, ``verbose``, ...).

    Returns
    -------
    Avocado
        Fitted: the model's cell types, assays and one genome axis per chromosome.

    Examples
    --------
    >>> import epitensor as et
    >>> model = et.pretrained("roadmap-hg19", chroms=["chr21"])  # doctest: +SKIP
    >>> model.predict("E116", "H3K27ac", axis="chr21").shape  # doctest: +SKIP
    (1925196,)
    """
    from epitensor.estimators.avocado import Avocado

    result = pull_model(name, chroms, cache, verbose=params.get("verbose", True))
    model = Avocado.load(result.path)
    if params:
        model.set_params(**params)
    return model


def resolve_model(
    model: str | os.PathLike,
    chroms: Sequence[str] | None = None,
    cache: str | os.PathLike | None = None,
    verbose: bool = True,
) -> Path:
    """A model directory for ``model``: the path itself, or a registry name pulled into the cache.

    A path that exists always wins over a registry name; anything else is an error.

    Parameters
    ----------
    model : str or path-like
        A model directory, or a registry name (``roadmap-hg19``).
    chroms : sequence of str, optional
        For a registry name: the chromosomes to pull. Default None: all.
    cache : str or path-like, optional
        Cache folder (as for :func:`pull_model`).
    verbose : bool
        Progress of a pull. Default True.

    Returns
    -------
    pathlib.Path
    """
    path = Path(model)
    if path.exists():
        return path
    if str(model) not in registry():
        raise EpitensorError(
            f"{model}: no such model directory, nor a published model's name (known: "
            f"{', '.join(registry())}; see `epitensor models list`)"
        )
    return pull_model(str(model), chroms, cache, verbose=verbose).path


def store_chroms(name: str, store) -> list[str]:
    """The chromosomes of published model ``name`` that ``store``'s layout covers (for ``extend``).

    Parameters
    ----------
    name : str
        Registry name.
    store : Store or str
        The store holding the new cell type's (or assay's) tracks.

    Returns
    -------
    list of str
        In the model's order; an error when there is none.
    """
    from epitensor.store.registry import open_store

    model = published_model(name)
    covered = set(open_store(store).layout.regions["chrom"].astype(str))
    chroms = [c for c in model.chroms if c in covered]
    if not chroms:
        raise EpitensorError(
            f"the store {store} covers none of {name}'s chromosomes ({', '.join(model.chroms)}); "
            f"ingest your tracks on {model.genome} chromosomes"
        )
    return chroms


# listing -----------------------------------------------------------------------------


def _source(model) -> str:
    return f"zenodo {model.zenodo_record} + lab" if model.zenodo_record else "lab server"


def list_models(cache: str | os.PathLike | None = None) -> str:
    """A table of every published model, with the chromosomes already in the cache.

    Parameters
    ----------
    cache : str or path-like, optional
        Cache folder (as for :func:`pull_model`).

    Returns
    -------
    str
        One row per model: name, genome, chromosomes, cell types, assays,
        where the files come from, what the cache holds.
    """
    head = ("name", "genome", "chroms", "cell types", "assays", "files from", "in cache")
    rows = [head]
    for model in registry().values():
        pulled = cached_chroms(model.name, cache)
        rows.append((
            model.name, model.genome, str(len(model.chroms)),
            str(len(model.celltypes) or "?"), str(len(model.assays) or "?"), _source(model),
            ",".join(pulled) if pulled else "-",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def describe_model(
    name: str, cache: str | os.PathLike | None = None, lab: str | None = None,
    zenodo: str | None = None,
) -> str:  # fmt: skip
    """Everything the registry knows of one published model, and what the cache holds.

    Cell types and assays come from the original repository's tables; for the
    models it lists none for, from the converted model when it was pulled.

    Parameters
    ----------
    name : str
        Registry name.
    cache, lab, zenodo : optional
        As for :func:`pull_model`.

    Returns
    -------
    str
        Several lines.
    """
    model = published_model(name)
    folder = cache_root(cache) / "models" / name
    pulled = _converted_chroms(folder / "model")
    celltypes, assays = list(model.celltypes), list(model.assays)
    note = "from the original repository's tables"
    if not celltypes and pulled:
        from epitensor.estimators.avocado import Avocado

        loaded = Avocado.load(folder / "model")
        celltypes, assays, note = loaded.celltypes_, loaded.assays_, "from the pulled model"
    base = f"{lab_url(lab)}/{model.original}/avocado-<chrom>.{{json,h5}}"
    lines = [
        f"{model.name}: {model.description}",
        f"  paper:        {model.paper or '-'}",
        f"  genome:       {model.genome}",
        f"  chromosomes:  {' '.join(model.chroms)}",
        f"  lab server:   {base}",
    ]
    if model.zenodo_record:
        lines.append(f"  zenodo:       {zenodo_api(zenodo)}/records/{model.zenodo_record}")
    lines.append(f"  cache:        {folder} (pulled: {', '.join(pulled) or 'nothing'})")
    if celltypes:
        lines.append(f"  cell types ({len(celltypes)}, {note}): {' '.join(celltypes)}")
        lines.append(f"  assays ({len(assays)}, {note}): {' '.join(assays)}")
    else:
        lines.append(
            "  cell types and assays: not listed by the original; pull a chromosome to see"
        )
    return "\n".join(lines)
