"""The one list of agents, in pipeline order. The Bedrock resource (engine switches, models), cost metering, the
cost assets, the agent assets and their checks, and the definitions all read it.

Adding an agent: write a module with an `Agent` subclass (see agents/base.py and the README's "Add an agent"),
then add its class to AGENTS below (or call `register` before building the definitions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from .base import Agent
from .demand import DemandSensingAgent
from .pricing import PricingAgent
from .rebalancing import RebalancingAgent

AGENTS: list[type[Agent]] = [DemandSensingAgent, PricingAgent, RebalancingAgent]


def registered(agents: Optional[Sequence[type[Agent]]] = None) -> tuple[type[Agent], ...]:
    return tuple(AGENTS if agents is None else agents)


def agent_names(agents: Optional[Sequence[type[Agent]]] = None) -> tuple[str, ...]:
    return tuple(a.name for a in registered(agents))


def agent_class(name: str, agents: Optional[Sequence[type[Agent]]] = None) -> type[Agent]:
    for a in registered(agents):
        if a.name == name:
            return a
    raise ValueError(f"unknown agent {name!r}; expected one of {agent_names(agents)}")


def register(agent: type[Agent]) -> type[Agent]:
    """Add an agent after the registered ones (usable as a class decorator). Its name, asset and resource key
    must be new, and every asset it reads upstream must belong to an agent registered before it."""
    missing = [f for f in ("name", "asset_name", "resource_key", "group_name", "tag", "description", "local_model",
                           "default_llm_model") if not isinstance(getattr(agent, f, None), str)]
    if missing:
        raise TypeError(f"{agent.__name__} does not declare {missing} (see agents/base.py)")
    for field in ("name", "asset_name", "resource_key"):
        taken = {getattr(a, field): a.__name__ for a in AGENTS}
        if getattr(agent, field) in taken:
            value = getattr(agent, field)
            raise ValueError(f"{agent.__name__}.{field}={value!r} is already {taken[value]}'s")
    known = {a.asset_name for a in AGENTS}
    unknown = [u for u in agent.upstream if u not in known]
    if unknown:
        raise ValueError(f"{agent.__name__} reads {unknown}, which no registered agent makes")
    AGENTS.append(agent)
    return agent


def unregister(agent: type[Agent]) -> None:
    AGENTS.remove(agent)
