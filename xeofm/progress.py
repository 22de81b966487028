"""Running dask graphs with progress, on the local or a distributed scheduler.

xeofm never creates a cluster. A graph runs on whatever scheduler the caller
chose: an explicit ``scheduler=`` argument, ``dask.config.set(scheduler=...)``,
the default :class:`distributed.Client` when one exists, else dask's threads.
Progress is reported the same way on all of them: a text progress bar
(:class:`dask.diagnostics.ProgressBar` locally, :func:`distributed.progress` on
a cluster) and/or a callback ``fn(done, total)`` called as units of work finish.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Hashable, Sequence, Union

__all__ = ["ProgressSpec", "RegionBar", "current_client", "resolve_scheduler", "run_keys"]

#: ``True`` (text bar), ``"dask"`` (dask's own bars), ``False``/``None`` (silent) or ``fn(done, total)``.
ProgressSpec = Union[bool, str, None, Callable[[int, int], Any]]


class RegionBar:
    """A one-line text progress bar over units of work (regions), for any scheduler.

    Call it as ``bar(done, total)``; it redraws at most every ``interval``
    seconds (and at the end) on ``out`` (stderr by default), with the elapsed
    time and an estimate of the time left.
    """

    def __init__(self, total: int, *, what: str = "regions", out: Any = None, width: int = 30,
                 interval: float = 0.5) -> None:
        import time

        self.total = int(total)
        self.what = what
        self.out = out if out is not None else sys.stderr
        self.width = width
        self.interval = interval
        self._t0 = time.perf_counter()
        self._last = -1.0
        self._first: int | None = None
        self._drawn = False

    def __call__(self, done: int, total: int | None = None) -> None:
        import time

        now = time.perf_counter()
        total = self.total if total is None else int(total)
        if self._first is None:
            self._first = done - 1
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        frac = done / total if total else 1.0
        fill = int(round(self.width * frac))
        el = now - self._t0
        rate = (done - self._first) / el if el > 0 and self._first is not None else 0.0
        left = f", ~{_hms((total - done) / rate)} left" if rate > 0 and done < total else ""
        self.out.write(f"\r[{'#' * fill}{' ' * (self.width - fill)}] {frac:4.0%} {done}/{total} {self.what}, "
                       f"{_hms(el)}{left}   ")
        self.out.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def current_client() -> Any | None:
    """The default :class:`distributed.Client` of this process, or ``None``.

    ``distributed`` is not imported when it has not been imported already: then
    no client can exist.
    """
    mod = sys.modules.get("distributed")
    if mod is None:
        return None
    try:
        return mod.Client.current(allow_global=True)
    except ValueError:
        return None


def resolve_scheduler(scheduler: Any = None) -> tuple[Callable[..., Any], Any | None]:
    """Pick the scheduler the way :func:`dask.compute` does.

    Parameters
    ----------
    scheduler
        ``None`` (dask's configured scheduler, else the default distributed
        client, else threads), a name (``"threads"``, ``"processes"``,
        ``"synchronous"``, ``"distributed"``), a callable ``get(dsk, keys)`` or
        a :class:`distributed.Client`.

    Returns
    -------
    get, client
        The scheduler's ``get`` function, and the distributed client behind it
        (``None`` for local schedulers).
    """
    import dask.array as dsa
    from dask.base import get_scheduler

    get = get_scheduler(scheduler=scheduler, cls=dsa.Array)
    owner = getattr(get, "__self__", None)
    if owner is not None and type(owner).__name__ == "Client" and hasattr(owner, "get"):
        return get, owner
    return get, None


def run_keys(
    dsk: Any,
    keys: Sequence[Hashable],
    *,
    scheduler: Any = None,
    progress: ProgressSpec = False,
    total: int | None = None,
    offset: int = 0,
) -> list[Any]:
    """Compute ``keys`` of an (already optimised) graph, reporting progress.

    Parameters
    ----------
    dsk
        The graph (a HighLevelGraph or a dict).
    keys
        Keys to compute; their results are returned in the same order.
    scheduler
        See :func:`resolve_scheduler`.
    progress
        ``True`` for a text progress bar, a callable ``fn(done, total)`` called
        each time one of ``keys`` finishes, or ``False``.
    total, offset
        For the callback: the total count of units, and how many were done
        before this call (``done`` starts at ``offset``).

    Returns
    -------
    list
        The results of ``keys``.
    """
    get, client = resolve_scheduler(scheduler)
    keys = list(keys)
    total = len(keys) + offset if total is None else total
    callback = progress if callable(progress) else None
    if client is not None:
        return _run_distributed(client, dsk, keys, bar=progress is True, callback=callback, total=total, offset=offset)

    import contextlib

    stack = contextlib.ExitStack()
    with stack:
        if progress is True:
            from dask.diagnostics import ProgressBar

            stack.enter_context(ProgressBar(dt=0.5, out=sys.stderr))
        if callback is not None:
            stack.enter_context(_KeyCallback(set(keys), callback, total, offset))
        return list(get(dsk, keys))


def _run_distributed(client: Any, dsk: Any, keys: list, *, bar: bool, callback: Any, total: int, offset: int) -> list:
    from distributed import as_completed, wait
    from distributed import progress as dist_progress

    futures = client.get(dsk, keys, sync=False)
    try:
        if bar:
            dist_progress(futures)  # a text bar outside notebooks; returns when all are done
        if callback is not None:
            done = offset
            for _ in as_completed(futures):
                done += 1
                callback(done, total)
        else:
            wait(futures)
        return client.gather(futures)
    finally:
        # cancel what is left when the caller is interrupted or a task failed
        client.cancel([f for f in futures if not f.done()])


class _KeyCallback:
    """A dask local-scheduler callback counting the completion of selected keys."""

    def __init__(self, keys: set, fn: Callable[[int, int], Any], total: int, offset: int) -> None:
        from dask.callbacks import Callback

        self._keys = keys
        self._fn = fn
        self._total = total
        self._done = offset
        self._cb = Callback(posttask=self._posttask)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:  # noqa: ANN001
        if key in self._keys:
            self._done += 1
            self._fn(self._done, self._total)

    def __enter__(self) -> "_KeyCallback":
        self._cb.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cb.__exit__(*exc)
