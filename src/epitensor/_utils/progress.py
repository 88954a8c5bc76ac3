"""Progress on stderr: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str | None = None,
    verbose: bool = True,
    unit: str = "it",
    **kwargs,
):
    """The one progress reporter of epitensor, on stderr, silenced by ``verbose=False``.

    On a terminal (or in a notebook) it is a tqdm bar. Elsewhere (a cluster
    job's log file, a pipe) carriage-return bars would grow the log by
    megabytes, so it prints one plain line every :data:`LOG_INTERVAL` seconds
    and one when it closes (:class:`LineProgress`). ``EPITENSOR_PROGRESS=bar``
    or ``=lines`` forces either.

    Parameters
    ----------
    iterable : iterable, optional
        Items to wrap. Default None: update by hand.
    total : int, optional
        Expected count. Default None: ``len(iterable)`` where it has one.
    desc : str, optional
        Label. Default None.
    verbose : bool
        Default True; False prints nothing.
    unit : str
        Name of one step. Default ``"it"``.
    **kwargs
        Passed to tqdm (bars only).

    Returns
    -------
    tqdm or LineProgress
        Both support iteration, ``update``, ``set_postfix``, ``close``, ``n``
        and use as a context manager.
    """
    if verbose and not _bars_wanted():
        return LineProgress(iterable, total=total, desc=desc, unit=unit)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=not verbose,
        unit=unit,
        leave=False,
        dynamic_ncols=True,
        **kwargs,
    )


#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


def _bars_wanted() -> bool:
    """True where a live bar renders: a terminal, or a notebook (tqdm.auto's widget)."""
    forced = os.environ.get("EPITENSOR_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines"):
        return forced == "bar"
    if any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__):  # tqdm.auto's widget
        return True
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


class LineProgress:
    """Progress as plain lines on stderr: one every ``interval`` seconds and one at the end.

    The stand-in for a tqdm bar where stderr is a file: a long run's log holds
    a few lines per minute, each complete (no carriage returns), e.g.
    ``impute 2 track(s): 1,200,000/3,977,000 bin (30%), 41,000 bin/s, 29 s, ~68 s left``.

    Parameters
    ----------
    iterable : iterable, optional
        Items to wrap. Default None.
    total : int, optional
        Expected count. Default None: ``len(iterable)`` where it has one.
    desc : str, optional
        Label. Default None.
    unit : str
        Name of one step. Default ``"it"``.
    interval : float, optional
        Seconds between lines. Default None: :data:`LOG_INTERVAL` (or the
        ``EPITENSOR_PROGRESS_INTERVAL`` environment variable).
    file : text stream, optional
        Default None: ``sys.stderr`` at each write.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str | None = None,
        unit: str = "it",
        interval: float | None = None,
        file=None,
    ):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if interval is None:
            interval = float(os.environ.get("EPITENSOR_PROGRESS_INTERVAL", LOG_INTERVAL))
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.interval, self.file = interval, file
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        except BaseException:  # stopped early (an error, or the loop left): no "done" line
            self._closed = True
            raise
        self.close()

    def __len__(self) -> int:
        return 0 if self.total is None else int(self.total)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; print a line if ``interval`` has passed since the last."""
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        """Append ``key=value`` pairs to the following lines (as tqdm's ``set_postfix``)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the label."""
        self.desc = desc

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed on ``update`` and ``close``."""

    def close(self) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            self._emit(time.monotonic(), done=True)

    def line(self, now: float | None = None, done: bool = False) -> str:
        """The text of one progress line."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n:,}" if self.total is None else f"{self.n:,}/{self.total:,}"
        parts = [f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({self.n / self.total:.0%})"
        parts += [f"{rate:,.3g} {self.unit}/s", f"{elapsed:,.0f} s"]
        if not done and self.total and rate > 0:
            parts.append(f"~{(self.total - self.n) / rate:,.0f} s left")
        if done:
            parts.append("done")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " * bool(self.desc) + ", ".join(parts)

    def _emit(self, now: float, done: bool = False) -> None:
        stream = self.file if self.file is not None else sys.stderr
        if stream is None:
            return
        stream.write(self.line(now, done) + "\n")
        stream.flush()
