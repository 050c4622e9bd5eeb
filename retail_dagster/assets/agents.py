"""Every agent's asset, built the same way from the registry: read the partition's inputs as one PlanningInputs,
let the agent decide, audit the decision, attach its metadata and LLM usage, and yield its checks (a failed
blocking check stops the assets downstream and keeps the day unpublished)."""


import dagster as dg

from ..agents.base import Agent
from ..agents.registry import agent_names, registered
from ..partitions import daily_by_group
from .common import blocking_checks_passed, check_outcomes, start_audit, usage_metadata, write_audit
from .ingest import INGEST_OUTPUTS, inputs_from_frames


def agent_asset(agent: type[Agent], agents=None) -> dg.AssetsDefinition:
    """The asset of one registered agent: inputs are the ingest tables it reads and its upstream agents' values."""
    ingest = tuple(agent.ingest_inputs or INGEST_OUTPUTS)
    ins = {name: dg.AssetIn(key=name) for name in ingest + tuple(agent.upstream)}
    names = agent_names(agents)

    @dg.asset(
        name=agent.asset_name,
        ins=ins,
        partitions_def=daily_by_group,
        check_specs=list(agent.checks),
        group_name=agent.group_name,
        owners=list(agent.owners),
        tags={"agent": agent.tag},
        description=agent.description,
        required_resource_keys={agent.resource_key, "audit", "data_source"},
        backfill_policy=dg.BackfillPolicy.multi_run(1),
        pool="bedrock",
    )
    def _agent_asset(context: dg.AssetExecutionContext, **values):
        resources = context.resources
        decider: Agent = getattr(resources, agent.resource_key)
        inputs = inputs_from_frames(context, {name: values[name] for name in ingest})
        start_audit(context, resources.audit, agent.asset_name, inputs)
        decision = decider.decide(inputs, {name: values[name] for name in agent.upstream},
                                  resources.data_source.identity())
        for line in decision.notes:
            context.log.info(line)
        for line in decision.warnings:
            context.log.warning(line)
        write_audit(context, resources.audit, agent.asset_name, inputs, decision.records(),
                    engine=decision.engine, model=decision.model, usage=decision.usage,
                    checks=check_outcomes(decision.checks), extra=decision.audit_extra,
                    used_inputs=list(agent.ingest_inputs) if agent.ingest_inputs else None)
        meta = dict(decision.metadata)
        meta.update(usage_metadata(agent.name, decision.usage, inputs.catalog["sku_id"].nunique(),
                                   decision.n_sku_locations, names))
        meta.update(blocking_checks_passed(decision.checks, agent.checks))
        yield dg.Output(decision.frame, metadata=meta)
        yield from decision.checks

    return _agent_asset


def agent_assets(agents=None) -> list[dg.AssetsDefinition]:
    return [agent_asset(a, agents) for a in registered(agents)]
