"""Run processes that start with their imports done: each run is still a process of its own, forked from a
server process that imported the code location and the libraries the steps use once.

A daily run of one SKU group spends 3.5-5 s of its process importing Dagster, the code location, LightGBM
(which imports scikit-learn and SciPy) and mlforecast before its first step, every run. Python's `forkserver`
start method with preloaded modules pays that once: the server imports them, and every run's process is a fork
of it (copy-on-write), so a run starts in a fraction of a second, with its own memory, its own failure and its
own exit, as before. Two users of it:

- `launcher.PreloadedRunLauncher`: a Dagster run launcher for a deployment on one host (the daemon launches each
  queued run as a forked process). Configure it in `$DAGSTER_HOME/dagster.yaml`:

      run_launcher:
        module: retail_dagster.launcher
        class: PreloadedRunLauncher
        config:
          threads_per_run: 1          # optional: cores / max_concurrent_runs

- `retail-dagster run --workers N`: the day's groups as runs in forked processes, at most N at once.

Only imports happen in the server (no thread pool, no OpenMP region, no file handle is opened there), so a
fork of it is safe. A module that fails to import is skipped by the server and imported by the run as usual. The
server keeps the code it imported: a run forked after the project's files changed (new code deployed, the daemon
not restarted) replaces itself with a fresh `dagster api execute_run` process, so it never runs old code.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import threading

# what a daily run imports before its first step: the code location (Dagster, pandas, pyarrow), then the forecast
# step's libraries (LightGBM with scikit-learn and SciPy; mlforecast, which imports numba), Dagster's run worker,
# and what a run builds before its steps (preload_warm). This module first: its CODE_STAMP then records the
# project's files as the server imported them.
PRELOAD_MODULES = ("retail_dagster.preload", "retail_dagster.definitions", "lightgbm", "mlforecast",
                   "dagster._cli.api", "retail_dagster.preload_warm")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_server_lock = threading.Lock()


def code_stamp(root: str | None = None) -> str:
    """A digest of the project's Python files (path, size, modification time) under `root` (default: this
    package): it changes when new code is deployed."""
    import hashlib

    root = root or os.path.dirname(os.path.abspath(__file__))
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(folder, name))
            entries.append(f"{os.path.relpath(os.path.join(folder, name), root)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("\n".join(entries).encode()).hexdigest()


# the project's code as this process imported it; a process forked from the server inherits the server's stamp
CODE_STAMP = code_stamp()


def code_changed() -> bool:
    """Whether the project's files changed since this process (for a fork: its server) imported them."""
    return code_stamp() != CODE_STAMP


def worker_context(preload: tuple[str, ...] = PRELOAD_MODULES, start: bool = False):
    """The forkserver context whose server has imported `preload` (one server per process, started with the first
    process, or now with `start`, with this process's environment at that moment). This module imports only the
    standard library, so a caller can start the server before importing anything heavy itself."""
    ctx = multiprocessing.get_context("forkserver")
    with _server_lock:
        ctx.set_forkserver_preload(list(preload))
        if start:
            multiprocessing.forkserver.ensure_running()
    return ctx


def thread_env(threads: int) -> dict[str, str]:
    """The environment variables that give OpenMP (LightGBM's included) and BLAS `threads` threads."""
    return {name: str(threads) for name in THREAD_VARS}


def limit_threads(threads: int | None) -> None:
    """Give this process `threads` threads for OpenMP, BLAS, LightGBM and the Parquet reader (None: unchanged).

    The settings are read when each library first uses them (LightGBM's `run_threads()` reads OMP_NUM_THREADS at
    each fit), so setting them in the forked run is enough; BLAS's pool already exists and is resized."""
    if not threads:
        return
    os.environ.update(thread_env(threads))
    import pyarrow

    pyarrow.set_cpu_count(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS keeps its size: only numpy's own linear algebra uses it here
        return
    threadpool_limits(threads)


def peak_rss_gb() -> float:
    """This process's peak resident memory (shared pages of the server included), in GB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
