"""`PreloadedRunLauncher`: a Dagster run launcher for a deployment on one host that starts each run as a process
of its own, forked from a server that imported the code location and the steps' libraries once
(`retail_dagster/preload.py` says why and how). In `$DAGSTER_HOME/dagster.yaml`:

    run_launcher:
      module: retail_dagster.launcher
      class: PreloadedRunLauncher
      config:
        threads_per_run: 1          # optional: cores / max_concurrent_runs
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from .preload import PRELOAD_MODULES, code_changed, limit_threads, worker_context

PID_TAG, HOST_TAG = "retail_dagster/worker_pid", "retail_dagster/worker_host"


def _execute_run(run_id: str, instance_ref, threads: int | None, job_origin) -> None:
    """A launched run's process: what `dagster api execute_run` does, in a fork of the preloaded server. If the
    project's files changed since the server imported them, this process becomes `dagster api execute_run` itself
    (same pid, fresh imports of the new code)."""
    limit_threads(threads)
    if code_changed():
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        args = ExecuteRunArgs(job_origin=job_origin, run_id=run_id, instance_ref=instance_ref,
                              set_exit_code_on_failure=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "dagster", "api", "execute_run", serialize_value(args)])
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import DagsterInstance
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts():
        with DagsterInstance.from_ref(instance_ref) as instance:
            code = _execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=True)
    sys.exit(code)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {-code} ({name}), exit code {code}"
    return f"exit code {code}"


class PreloadedRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as a local process forked from a server that has already imported the code location and
    the steps' libraries (module docstring). For a deployment on one host: runs need the code importable where the
    daemon runs, as with Dagster's own local launchers. Termination sends the run's process SIGINT (Dagster then
    marks the run canceled); run monitoring asks for the process's exit code, so a run whose process died (killed,
    out of memory) is marked failed and can be retried."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, threads_per_run: int | None = None,
                 preload_modules: list[str] | None = None):
        self._inst_data = inst_data
        self._threads = threads_per_run
        self._preload = tuple(preload_modules) if preload_modules else PRELOAD_MODULES
        self._processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self._exit_codes: dict[str, int] = {}
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        from dagster import Array, Field, Noneable

        return {
            "threads_per_run": Field(Noneable(int), is_required=False, default_value=None,
                                     description="threads each run may use (cores / max_concurrent_runs); "
                                                 "default: the environment's OMP_NUM_THREADS, else every core"),
            "preload_modules": Field(Noneable(Array(str)), is_required=False, default_value=None,
                                     description="modules the server imports once (default: PRELOAD_MODULES)"),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        process = worker_context(self._preload_modules()).Process(
            target=_execute_run, args=(run.run_id, self._instance.get_ref(), self._threads, run.job_code_origin),
            name=f"dagster-run-{run.run_id[:8]}")
        process.start()
        with self._lock:
            self._reap()
            self._processes[run.run_id] = process
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(process.pid), HOST_TAG: socket.gethostname()})
        self._instance.report_engine_event(f"Launched run in a preloaded worker process (pid: {process.pid}).", run,
                                           cls=self.__class__)

    def _preload_modules(self) -> tuple[str, ...]:
        """The configured modules, then those of this instance's storages (e.g. Postgres'), which every run's
        process opens."""
        storages = [getattr(self._instance, name, None) for name in
                    ("_run_storage", "_event_storage", "_schedule_storage", "_compute_log_manager")]
        return tuple(dict.fromkeys([*self._preload, *(type(s).__module__ for s in storages if s is not None)]))

    def _reap(self) -> None:
        """Close the handles of finished processes, keeping their exit codes for run monitoring."""
        for run_id, process in list(self._processes.items()):
            if not process.is_alive():
                self._exit_codes[run_id] = process.exitcode
                process.close()
                del self._processes[run_id]

    def _exit_code(self, run_id: str) -> tuple[bool, int | None]:
        """(whether this launcher started the run's process, its exit code: None while it runs)."""
        with self._lock:
            self._reap()
            if run_id in self._processes:
                return True, None
            if run_id in self._exit_codes:
                return True, self._exit_codes[run_id]
        return False, None

    def _tagged_pid(self, run) -> int | None:
        """The pid of the run's process from its tags, if it ran on this host (also for a run this launcher did
        not start, e.g. before a daemon restart)."""
        if run.tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in run.tags:
            return None
        return int(run.tags[PID_TAG])

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        _, code = self._exit_code(run_id)
        pid = self._tagged_pid(run)
        if pid is None or code is not None:
            self._instance.report_engine_event("No live run worker process to send the termination request to.",
                                               run, cls=self.__class__)
            return False
        try:
            os.kill(pid, signal.SIGINT)  # Dagster's run worker turns SIGINT into a canceled run
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        ours, code = self._exit_code(run.run_id)
        if ours:
            if code is None:
                return CheckRunHealthResult(WorkerStatus.RUNNING)
            if code == 0:
                return CheckRunHealthResult(WorkerStatus.SUCCESS)
            return self._failed(run, f"Run worker process (pid {run.tags.get(PID_TAG)}) {_exit_text(code)}.")
        pid = self._tagged_pid(run)
        if pid is None:  # not started here (or its pid not tagged yet): nothing known against it, so not failed
            return CheckRunHealthResult(WorkerStatus.RUNNING, "No worker process of this launcher to check.")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return self._failed(run, f"Run worker process (pid {pid}) is gone.")
        return CheckRunHealthResult(WorkerStatus.RUNNING)

    def _failed(self, run, message: str) -> CheckRunHealthResult:
        """A dead run worker: said once in the run's own event log (as Dagster's code server does for its run
        processes), and reported to run monitoring, which marks the run failed."""
        with self._lock:
            first = run.run_id not in self._reported
            self._reported.add(run.run_id)
        if first and not run.is_finished:
            self._instance.report_engine_event(message, run, cls=self.__class__)
        return CheckRunHealthResult(WorkerStatus.FAILED, message)

    def join(self, timeout: int = 30) -> None:
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            process.join(timeout)

    def dispose(self) -> None:
        self.join(0)
