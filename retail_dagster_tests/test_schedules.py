"""The daily schedule: one run request per SKU group for the scheduled day, idempotent run keys, skips before
history."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from retail_dagster.jobs import DAILY_PIPELINE
from retail_dagster.partitions import DATE_DIM, GROUP_DIM, daily_by_group
from retail_dagster.schedules import SCHEDULE_HOUR, SCHEDULE_TIMEZONE, daily_planning_schedule, planning_run_requests

GROUPS = daily_by_group.get_partitions_def_for_dimension(GROUP_DIM).get_partition_keys()
DATES = daily_by_group.get_partitions_def_for_dimension(DATE_DIM)
FIRST_DAY = DATES.start.date()


def tick_at(day: dt.date) -> dt.datetime:
    """The schedule's tick time for `day`, in the schedule's own timezone (as the daemon passes it)."""
    return dt.datetime(day.year, day.month, day.day, SCHEDULE_HOUR, tzinfo=ZoneInfo(SCHEDULE_TIMEZONE))


def evaluate(day: dt.date):
    """Evaluate a tick the way the daemon does (evaluate_tick also resolves and validates partition keys)."""
    from retail_dagster.definitions import defs

    with dg.build_schedule_context(scheduled_execution_time=tick_at(day),
                                   repository_def=defs.get_repository_def()) as context:
        return daily_planning_schedule.evaluate_tick(context)


@pytest.mark.parametrize("offset_days", [0, 30])
def test_tick_requests_one_run_per_group_for_the_scheduled_day(offset_days):
    day = FIRST_DAY + dt.timedelta(days=offset_days)
    data = evaluate(day)
    requests = data.run_requests
    assert data.skip_message is None
    assert len(requests) == len(GROUPS) > 0
    keys = [r.partition_key for r in requests]
    assert all(isinstance(k, dg.MultiPartitionKey) for k in keys)
    assert sorted(k.keys_by_dimension[GROUP_DIM] for k in keys) == sorted(GROUPS)
    assert {k.keys_by_dimension[DATE_DIM] for k in keys} == {day.isoformat()}
    # every requested partition exists in the job's partitions definition (so the run can launch)
    assert all(daily_by_group.has_partition_key(str(k)) for k in keys)
    run_keys = [r.run_key for r in requests]
    assert len(set(run_keys)) == len(run_keys) and all(run_keys)
    for r in requests:
        assert r.tags["planning_date"] == day.isoformat()
        assert r.tags["sku_group"] == r.partition_key.keys_by_dimension[GROUP_DIM]


def test_run_keys_are_stable_for_a_tick_and_distinct_across_days():
    """The daemon drops a run request whose run key it has already seen: a re-evaluated tick launches nothing twice."""
    day = FIRST_DAY + dt.timedelta(days=10)
    first = [r.run_key for r in evaluate(day).run_requests]
    again = [r.run_key for r in evaluate(day).run_requests]
    next_day = [r.run_key for r in evaluate(day + dt.timedelta(days=1)).run_requests]
    assert first == again
    assert not set(first) & set(next_day)


def test_tick_before_the_first_partition_is_skipped():
    data = evaluate(FIRST_DAY - dt.timedelta(days=1))
    assert not data.run_requests
    assert data.skip_message and FIRST_DAY.isoformat() in data.skip_message


def test_planning_run_requests_match_the_schedule():
    day = (FIRST_DAY + dt.timedelta(days=3)).isoformat()
    direct = planning_run_requests(day)
    scheduled = evaluate(dt.date.fromisoformat(day)).run_requests
    assert [(r.run_key, str(r.partition_key)) for r in direct] == [(r.run_key, str(r.partition_key)) for r in scheduled]


def test_schedule_is_registered_and_targets_the_daily_job():
    from retail_dagster.definitions import defs

    schedule = defs.resolve_schedule_def("daily_planning_schedule")
    assert schedule.job_name == DAILY_PIPELINE
    assert schedule.cron_schedule == f"0 {SCHEDULE_HOUR} * * *"
    assert schedule.execution_timezone == SCHEDULE_TIMEZONE
    assert defs.resolve_job_def(DAILY_PIPELINE).partitions_def == daily_by_group
