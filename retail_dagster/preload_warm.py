"""Imported once by the preloaded run server (`preload.PRELOAD_MODULES`), never by a run itself: what every run
would otherwise build for itself after the fork, built once before it. About 1 s a run on the reference machine:
an ephemeral Dagster instance's storage modules (SQLAlchemy, Alembic), the daily job resolved from the
definitions (Definitions caches it), and the forecast's compiled predict kernels (tree_predict.warm)."""

import sqlalchemy  # noqa: F401  (imported for the forks: an instance's storages need it)
import dagster._core.instance.factory  # noqa: F401
import dagster._core.storage.event_log.in_memory  # noqa: F401
import dagster._core.storage.runs.in_memory  # noqa: F401
import dagster._core.storage.schedules.sqlite.sqlite_schedule_storage  # noqa: F401

from .core.tree_predict import warm
from .definitions import defs
from .jobs import DAILY_PIPELINE

defs.resolve_job_def(DAILY_PIPELINE)

warm()  # the forecast's compiled predict: numba's kernels
