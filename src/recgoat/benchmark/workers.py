"""Workers: with ``jobs: N`` the cells still to train are handed to N processes (:func:`_run_in_workers`), each
cell trained exactly as one process trains it (:func:`~recgoat.benchmark.runner.run_cell`: same seeds, folders and
files); the grid's first-seed points are all trained before its chosen points' other seeds, as in one process. Once
the run stops (Ctrl-C, SIGTERM through the CLI, an error that stops it) no worker starts another cell, and no worker
outlives the parent (:func:`_stop_workers`, :func:`_watch_parent`); a worker still starting up handles a Ctrl-C once
started (:func:`_sigint_blocked`).

:func:`_train_in_worker` takes :func:`~recgoat.benchmark.runner.run_cell` from the runner inside the function, not
at the top of this module: the runner imports this module.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from recgoat.benchmark.cells import Cell
from recgoat.benchmark.checks import _cell_inputs
from recgoat.benchmark.config import BenchmarkConfig
from recgoat.benchmark.data import needs_features
from recgoat.errors import ConfigError, RecGOATError, show_warning


# a worker process's datasets and features, loaded by its first cell of each and reused by the next
_WORKER_CACHE: tuple[dict, dict] = ({}, {})
# a worker's view of the run: the stop flag shared with the parent and the other workers (a lock-free shared byte:
# it is set from signal handlers, where a lock held by the interrupted code would deadlock), whether a cell is
# training now, and whether this worker has been interrupted already
_WORKER_STOP: Any = None
_WORKER_IN_CELL = False
_WORKER_INTERRUPTED = False
_PARENT_POLL_S = 1.0  # how often a worker checks that its parent is alive


def _worker_sigint(signum: int, frame: Any) -> None:
    """SIGINT in a worker (Ctrl-C reaches the whole process group; the parent sends it to stop its workers): no
    further cell starts in any worker, and the cell training here stops as a Ctrl-C stops it in one process (its
    checkpoint kept). An idle worker is not interrupted: a KeyboardInterrupt inside the pool's own queue handling
    would kill it with a traceback."""
    global _WORKER_INTERRUPTED
    if _WORKER_STOP is not None:
        _WORKER_STOP.value = 1
    if _WORKER_IN_CELL and not _WORKER_INTERRUPTED:
        _WORKER_INTERRUPTED = True
        raise KeyboardInterrupt


def _watch_parent(parent: int) -> None:
    """Exit the worker once its parent is gone (``kill -9``, or a parent stopped before it could stop its
    workers): an orphan would write cells into a benchmark folder whose lock died with the parent. Exiting
    at once loses nothing finished: every file is written atomically, and the cell resumes from its checkpoint."""
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def _warning_setup() -> tuple[bool, bytes | None]:
    """What a worker needs to warn as this process warns (:func:`_worker_init`): whether warnings print as the
    ``recgoat`` command's one line (:func:`~recgoat.errors.show_warning` installed here: a Python caller keeps
    Python's own display, in the workers too), and this process's warnings filters, pickled (None where one cannot
    be: the worker keeps its own, the defaults with ``-W``/``PYTHONWARNINGS``, which a spawned process inherits)."""
    import pickle

    try:
        filters = pickle.dumps(list(warnings.filters))
    except Exception:  # noqa: BLE001 - a filter of an unpicklable category
        filters = None
    return warnings.showwarning is show_warning, filters


def _warn_as_parent(one_line: bool, filters: bytes | None) -> None:
    """Warnings in this worker filtered by the parent's filters (a warning the parent ignores, or turns into an
    error, is so here too; one it shows once is shown once by each worker) and, where the parent printed them as
    one ``warning: …`` line, printed so here (not Python's two lines with the library's file and source line)."""
    import pickle

    if filters is not None:
        try:
            parents = pickle.loads(filters)
        except Exception:  # noqa: BLE001 - a category this process cannot import (the parent's script): its own
            parents = None
        if parents is not None:
            warnings.resetwarnings()  # (which also forgets the warnings noted as shown under the filters before)
            warnings.filters.extend(parents)
    if one_line:
        warnings.showwarning = show_warning


def _worker_init(stop: Any, parent: int, one_line_warnings: bool = False, warning_filters: bytes | None = None) -> None:
    """Initializer of a ``jobs > 1`` worker process: the shared stop flag, its SIGINT handling, the parent watch,
    and warnings shown as the parent shows them (:func:`_warn_as_parent`)."""
    import signal

    global _WORKER_STOP
    _WORKER_STOP = stop
    _warn_as_parent(one_line_warnings, warning_filters)
    signal.signal(signal.SIGINT, _worker_sigint)
    if hasattr(signal, "pthread_sigmask"):
        # blocked since the process started (_sigint_blocked): a Ctrl-C, or _stop_workers' SIGINT, that came during
        # the start-up was kept pending and is handled now, as one coming later is
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread for the block, where the platform can block it.

    Why: a process started in the block inherits the blocked signal (across exec), and the pool starts its workers
    inside ``submit``. A worker's start-up (the interpreter, then the imports of torch and this module) takes
    seconds before :func:`_worker_init` installs its handler; a Ctrl-C there (it reaches the whole process group)
    killed the worker with a KeyboardInterrupt traceback from the middle of an import. Blocked, it waits pending
    until the initializer unblocks it under the worker's own handler (so a run stopped then ends once its workers
    have started, seconds later, rather than at once with a traceback). Nothing is lost here either: a SIGINT that
    came during the block is delivered to this process when the block ends. (CPython starts its resource tracker
    process so.)"""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: no signals to block
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _train_in_worker(config: BenchmarkConfig, cell: Cell, model_cls: Any) -> dict[str, Any]:
    """One cell in a worker process of a ``jobs > 1`` run; its result, or its error as plain data (an exception
    object need not survive pickling). ``model_cls`` travels with the cell: unpickling it imports the module that
    defines (and registers) it, so a model registered in the parent's script is known here too."""
    global _WORKER_IN_CELL
    from recgoat.benchmark.runner import _fatal, run_cell  # here, not at the top: the runner imports this module

    t0 = time.perf_counter()
    try:
        _WORKER_IN_CELL = True  # set inside the try: a SIGINT right after it is caught below
        # a cell already queued to this worker when the run was stopped (Ctrl-C, SIGTERM, an error that stops
        # the run): cancelling its future cannot take it back, so it is dropped here, before it starts
        if _WORKER_INTERRUPTED or (_WORKER_STOP is not None and _WORKER_STOP.value):
            return {"stopped": True}
        # auto features were encoded by the parent before the workers started (_run_in_workers): read, not encoded.
        # The parent loaded these data and features too, before any cell (checks.py), and showed their warnings
        # then (an items file lacking some items, say): here each would be shown again by every worker
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset, features, train_cfg = _cell_inputs(config, cell, {cell.model.key: model_cls}, *_WORKER_CACHE,
                                                        encoded=True)
        # no bars from workers (their lines would interleave), and the cores shared out unless a count is set
        update: dict[str, Any] = {"progress": False}
        if not train_cfg.num_threads:
            update["num_threads"] = max(1, (os.cpu_count() or 1) // config.jobs)
        result = run_cell(cell, dataset, features, train_cfg.model_copy(update=update))
    except KeyboardInterrupt:  # stopped by the run (see _worker_sigint): what it finished is kept, nothing to report
        return {"stopped": True}
    except Exception as e:  # noqa: BLE001 — reported by the parent as the sequential run reports it
        return {"error": f"{type(e).__name__}: {e}", "message": str(e), "trace": traceback.format_exc(),
                "fatal": _fatal(e), "user_error": isinstance(e, RecGOATError)}
    finally:
        _WORKER_IN_CELL = False
    return {"result": result, "seconds": time.perf_counter() - t0}


def _run_in_workers(config: BenchmarkConfig, cells: list[Cell], model_classes: dict[str, Any],
                    data_cache: dict, feat_cache: dict, notify: Callable[[Cell, str], None],
                    finished: Callable[[Cell, dict, float], None], failed: Callable[[Cell, str, str], None]) -> None:
    """Train ``cells`` in ``config.jobs`` worker processes, each cell as :func:`run_cell` trains it alone (same
    seeds, same files), reported as each finishes.

    Workers are started by ``spawn`` (a forked child of a process that has run torch's thread pool can hang).
    ``auto`` features are encoded here first, once, rather than by several workers at the same time. An error
    that stops a sequential run (bad data or configuration, or any error with ``on_error: raise``) stops this one
    too: cells not started are cancelled, and the ones running finish and keep their results.
    """
    import multiprocessing
    import pickle
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    for cell in cells:
        if cell.dataset.features == "auto" and needs_features(model_classes[cell.model.key]):
            _cell_inputs(config, cell, model_classes, data_cache, feat_cache)
    stop: BaseException | None = None

    def outcome(cell: Cell, fut) -> BaseException | None:
        """Report a finished future; the error that stops the run, if it is one."""
        try:
            out = fut.result()
        except BrokenProcessPool:
            return RecGOATError(f"a worker process died (killed, or out of memory?) while {cell.title} or another "
                                f"cell trained; what finished is kept and a rerun resumes the rest from their "
                                f"checkpoints")
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # the cell or its model class
            return ConfigError(f"jobs: {config.jobs}: {cell.title} cannot be sent to a worker process "
                               f"({type(e).__name__}: {e}); a model defined where a new process cannot import it "
                               f"(a notebook, a function) needs jobs: 1")
        if "stopped" in out:  # not started, or interrupted, after the run was stopped: not a result nor a failure
            return None
        if "result" in out:
            finished(cell, out["result"], out["seconds"])
        elif out["fatal"] or (config.on_error == "raise" and out["user_error"]):  # one line, as the CLI prints it
            return RecGOATError(out["message"])
        elif config.on_error == "raise":
            return RuntimeError(f"{cell.title} failed in a worker process:\n{out['trace']}")
        else:
            failed(cell, out["error"], out["trace"])
        return None

    ctx = multiprocessing.get_context("spawn")
    # set once the run stops: a worker starts no cell after it (cancelling a future cannot recall the cells the
    # pool has already queued to its workers)
    stop_flag = ctx.Value("b", 0, lock=False)
    pool = ProcessPoolExecutor(max_workers=min(config.jobs, len(cells)), mp_context=ctx,
                               initializer=_worker_init, initargs=(stop_flag, os.getpid(), *_warning_setup()))
    ended = False
    try:
        futures = {}
        for cell in cells:
            with _sigint_blocked():  # a worker started by this submit starts with SIGINT blocked (_worker_init)
                future = pool.submit(_train_in_worker, config, cell, model_classes[cell.model.key])
            futures[future] = cell
            notify(cell, "start")
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:  # every finished cell is reported, after an error too
                error = outcome(futures[fut], fut)
                stop = stop or error
            if stop is not None:  # cancel what has not started (waited on no more); the running cells finish
                stop_flag.value = 1
                pending = {f for f in pending if not f.cancel()}
        ended = True
    finally:
        if ended:
            pool.shutdown(wait=True, cancel_futures=True)
        else:  # Ctrl-C, SIGTERM (the CLI raises KeyboardInterrupt for it) or an error of the parent's own
            _stop_workers(pool, stop_flag)
    if stop is not None:
        raise stop


_STOP_GRACE_S = 15.0  # how long interrupted workers get to stop before they are killed


def _stop_workers(pool: Any, stop_flag: Any, grace: float = _STOP_GRACE_S) -> None:
    """Stop a worker pool on the parent's way out: no cell starts any more, the running ones are interrupted as
    Ctrl-C interrupts them (a SIGINT, whether or not they had one already: ``kill -INT``/``-TERM`` of the parent
    alone reaches no worker), and a worker still alive after ``grace`` seconds is killed, so that none outlives
    the parent and its folder lock. Nothing finished is lost: files are written atomically, cells resume from
    their checkpoints."""
    import signal

    stop_flag.value = 1
    # The pool's own processes, read from the executor: it has no public way to reach them before Python 3.14,
    # whose terminate_workers()/kill_workers() end them at once rather than interrupting their cells as Ctrl-C
    # does. The public alternatives miss some or take too many: multiprocessing.active_children() is every child
    # of this process (a caller's own pool too), and pids recorded by the workers' initializer leave out a worker
    # still starting up (the one a Ctrl-C during start-up finds) and give no handle to join or kill. Read only, and
    # guarded: without it the workers still stop, after their cell (the shutdown below) or with this process
    # (_watch_parent).
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive() and p.pid is not None:
            try:
                os.kill(p.pid, signal.SIGINT)
            except ProcessLookupError:  # ended meanwhile
                pass
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
