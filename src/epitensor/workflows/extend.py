"""Adding cell types or assays to a saved model, written as a new model directory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from epitensor._utils import EpitensorError

__all__ = ["extend"]


def extend(
    model: str | os.PathLike,
    store,
    out: str | os.PathLike,
    celltypes: Sequence[str] = (),
    assays: Sequence[str] = (),
    n_epochs: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
    verbose: bool = True,
    allow_changed: bool = False,
):
    """Learn factors for new cell types or assays of a saved model; save a new model.

    The saved network, genome factors and existing cell type and assay factors
    are frozen (see :meth:`epitensor.estimators.avocado.Avocado.fit_celltypes`); only the
    new rows are learned, from every track of the new names that ``store``
    holds (one track is enough). The directory ``model`` is only read.

    Parameters
    ----------
    model : str or path-like
        Directory of a saved model.
    store : Store or str
        Store holding tracks of the new cell types or assays (with cell types /
        assays the model already knows); ``"roadmap-pilot"`` is the bundled sample.
    out : str or path-like
        Directory of the new model; must differ from ``model``.
    celltypes, assays : sequence of str
        New cell types, or new assays (one kind per call).
    n_epochs : int, optional
        Transfer epochs. Default None: the model's ``n_genome_epochs``.
    device : str, optional
        torch device. Default None: the model's setting.
    overwrite : bool
        Replace an existing ``out``. Default False.
    verbose : bool
        Show progress. Default True.
    allow_changed : bool
        Use a store whose copies of the model's tracks hold other values than
        the data the model was made from, with a warning kept in the new
        model's ``training_data_``. Default False: refuse it; a store on other
        coordinates is refused either way.

    Returns
    -------
    Avocado
        The extended model (also saved to ``out``).

    Examples
    --------
    >>> import epitensor as et
    >>> et.ingest("my_celltype.tsv", "mine.zarr", regions="roadmap-pilot")  # your bigWigs, same layout
    >>> model = et.extend("model/", "mine.zarr", "extended/", celltypes=["MyCells"])
    """
    from epitensor.estimators.avocado import Avocado

    source, target = Path(model), Path(out)
    if target.resolve() == source.resolve():
        raise EpitensorError(
            f"--out {out} is the original model; extending writes a new model directory"
        )
    if bool(celltypes) == bool(assays):
        raise EpitensorError(
            "give new cell types or new assays (one kind per call), not both or none"
        )
    if target.exists() and not overwrite:
        raise EpitensorError(f"{target} already exists; choose another --out or pass overwrite")
    estimator = Avocado.load(source)
    params = {"verbose": verbose}
    if n_epochs is not None:
        params["n_genome_epochs"] = n_epochs
    if device is not None:
        params["device"] = device
    estimator.set_params(**params)
    if celltypes:
        estimator.fit_celltypes(store, list(celltypes), allow_changed=allow_changed)
    else:
        estimator.fit_assays(store, list(assays), allow_changed=allow_changed)
    estimator.save(target, overwrite=overwrite)
    return estimator
