"""Errors and warnings: what a user sees when something is wrong."""

from __future__ import annotations

import warnings


class EpitensorError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


class EpitensorWarning(UserWarning):
    """Warnings raised by epitensor (filter them with this class)."""


def warn(message: str, stacklevel: int = 2) -> None:
    """Issue an :class:`EpitensorWarning` attributed to the caller's caller."""
    warnings.warn(message, EpitensorWarning, stacklevel=stacklevel + 1)
