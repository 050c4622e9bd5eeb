"""The daily schedule: at each tick, one run per SKU group for the day being planned (idempotent run keys)."""

import os

import dagster as dg

from .jobs import daily_cost_rollup_job, daily_pipeline_job
from .partitions import DATE_DIM, GROUP_DIM, daily_by_group, partition_setup

SCHEDULE_HOUR = int(os.environ.get("RETAIL_DAGSTER_SCHEDULE_HOUR", "5"))
SCHEDULE_TIMEZONE = os.environ.get("RETAIL_DAGSTER_TIMEZONE", "UTC")
# A run is one partition of a mostly sequential chain of steps: run them in the run's own process (the default
# executor starts a process per step, each re-importing the whole stack before any work).
IN_PROCESS_RUN_CONFIG = {"execution": {"config": {"in_process": {}}}}


def planning_run_requests(planning_date: str) -> list[dg.RunRequest]:
    """One run request per SKU group for `planning_date`; the run key makes a repeated tick a no-op."""
    groups = daily_by_group.get_partitions_def_for_dimension(GROUP_DIM).get_partition_keys()
    return [
        dg.RunRequest(
            run_key=f"{planning_date}|{group}",
            partition_key=dg.MultiPartitionKey({DATE_DIM: planning_date, GROUP_DIM: group}),
            tags={"planning_date": planning_date, "sku_group": group, "trigger": "daily_schedule"},
            run_config=IN_PROCESS_RUN_CONFIG,
        )
        for group in groups
    ]


@dg.schedule(
    job=daily_pipeline_job,
    cron_schedule=f"0 {SCHEDULE_HOUR} * * *",
    execution_timezone=SCHEDULE_TIMEZONE,
    name="daily_planning_schedule",
    description="Every morning, plan today (data through yesterday) for every SKU group: one run per group.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def daily_planning_schedule(context: dg.ScheduleEvaluationContext):
    planning_date = context.scheduled_execution_time.strftime("%Y-%m-%d")
    start, _ = partition_setup()
    if planning_date < start:
        return dg.SkipReason(f"{planning_date} is before the first plannable date {start}")
    return planning_run_requests(planning_date)


@dg.schedule(
    job=daily_cost_rollup_job,
    cron_schedule=f"0 {(SCHEDULE_HOUR + 3) % 24} * * *",
    execution_timezone=SCHEDULE_TIMEZONE,
    name="daily_cost_rollup_schedule",
    description="Three hours after planning, roll the day's LLM costs up across SKU groups.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def daily_cost_rollup_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"costs|{day}", partition_key=day)
