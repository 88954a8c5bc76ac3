"""The base of the jobs' options objects: frozen dataclasses merged with keyword overrides.

Each job (ingest, training, imputation, annotation, the benchmark, tuning, the
downstream comparison) declares its settings and their defaults once, in a
subclass of :class:`JobOptions` that imports neither numpy nor torch; the
command line reads its defaults from there, the Python API takes the object or
keywords, and Ray tasks receive the object.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from epitensor._utils.errors import EpitensorError

__all__ = ["JobOptions"]

OptionsT = TypeVar("OptionsT", bound="JobOptions")


@dataclass(frozen=True)
class JobOptions:
    """Base of the options objects: merges keyword overrides, refusing unknown names.

    Examples
    --------
    >>> from epitensor.workflows.options import ImputeOptions
    >>> ImputeOptions.resolve(None, arcsinh=True).arcsinh
    True
    """

    @classmethod
    def resolve(
        cls: type[OptionsT], options: OptionsT | None = None, /, **overrides: Any
    ) -> OptionsT:
        """``options`` (default: the defaults of ``cls``) with ``overrides`` replacing its fields.

        Parameters
        ----------
        options : JobOptions, optional
            An instance of ``cls``. Default None: ``cls()``.
        **overrides
            Field values that replace those of ``options``.

        Returns
        -------
        JobOptions
            A new instance of ``cls``; ``options`` is left as it was.

        Raises
        ------
        EpitensorError
            When ``options`` is not an instance of ``cls``, or an override names no field of it.
        """
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise EpitensorError(
                f"invalid options: got {type(options).__name__}, expected {cls.__name__}"
            )
        names = [f.name for f in fields(cls)]
        for name in overrides:
            if name not in names:
                raise EpitensorError(
                    f"invalid option of {cls.__name__}: got {name!r}, expected one of {names}"
                )
        return replace(options, **overrides) if overrides else options
