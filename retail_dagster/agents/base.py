"""The agent contract: what every agent declares once, and what its one decision returns.

An agent is a Dagster resource (its settings are the resource's config, editable in the launchpad) that declares,
as class attributes, its name (the LLM switch, cost rows and `RETAIL_DAGSTER_<NAME>_ENGINE`), the asset it
materializes, the resource key it is bound to, the ingest tables and upstream agent assets it reads, its asset
checks, its local model label and its default Bedrock model; and one method, `decide`, that returns a `Decision`.
`assets/agents.py` builds every agent's asset the same way from `agents/registry.py`: adding an agent is one
module plus one registry line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from ..core.asof import PlanningInputs
from ..resources.bedrock import BedrockResource
from .llm import step_enabled


@dataclass
class Decision:
    """One agent's decision for one partition.

    frame: the asset's value (the decision rows); summary: a typed summary of how it was made (the agent's own
    dataclass); checks: the asset check results (guardrail outcomes; the blocking ones decide publication);
    usage: LLM usage rows (core.costs.USAGE_COLUMNS, empty on the local engine); engine / model: the labels
    written to the audit trail; n_sku_locations: the SKU-locations decided for (cost per SKU-location);
    metadata: UI metadata of the output; audit_records: the rows audited (default: `frame`); audit_extra: extra
    audit context; notes / warnings: lines for the run's log.
    """

    frame: pd.DataFrame
    summary: Any
    checks: list[dg.AssetCheckResult]
    usage: pd.DataFrame
    engine: str
    model: str
    n_sku_locations: int
    metadata: dict = field(default_factory=dict)
    audit_records: Optional[pd.DataFrame] = None
    audit_extra: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def records(self) -> pd.DataFrame:
        return self.frame if self.audit_records is None else self.audit_records


def engine_label(frame: pd.DataFrame, default: str = "local") -> str:
    """The engines that made a frame's rows, for the audit: 'bedrock', 'local', 'bedrock,local_fallback', ..."""
    if "engine" not in frame.columns or frame.empty:
        return default
    return ",".join(sorted(frame["engine"].astype(str).unique()))


class Agent(dg.ConfigurableResource):
    """Base of every agent resource: the declared contract plus the LLM switch."""

    name: ClassVar[str]  # "demand": LLM engine switch, cost rows, env RETAIL_DAGSTER_<NAME>_ENGINE
    asset_name: ClassVar[str]  # the asset it materializes
    resource_key: ClassVar[str]  # the resource key it is bound to in the definitions
    group_name: ClassVar[str]  # asset group in the UI
    owners: ClassVar[tuple[str, ...]] = ("team:retail-data",)
    tag: ClassVar[str]  # the asset's `agent` tag
    description: ClassVar[str]  # the asset's description
    ingest_inputs: ClassVar[Optional[tuple[str, ...]]] = None  # ingest assets read (None: all of them)
    upstream: ClassVar[tuple[str, ...]] = ()  # agent assets whose values it reads, in pipeline order
    checks: ClassVar[tuple[dg.AssetCheckSpec, ...]] = ()
    local_model: ClassVar[str]  # model label of the local engine in the audit trail
    default_llm_model: ClassVar[str]  # Bedrock model id unless BedrockResource.model_ids overrides it

    bedrock: Optional[BedrockResource] = Field(default=None, description="LLM client; its engine switch for this "
                                                                         "agent turns the LLM step on")

    @classmethod
    def from_settings(cls, bedrock: Optional[BedrockResource]) -> "Agent":
        """The agent as the definitions bind it (settings.py: environment variables); defaults otherwise."""
        return cls(bedrock=bedrock)

    def llm_on(self) -> bool:
        """True when the agent's LLM step runs: a Bedrock client is given and the agent's engine is bedrock."""
        return step_enabled(self.bedrock, self.name)

    def model_label(self) -> str:
        """The model that decides: the Bedrock model id when the LLM step is on, else the local model label."""
        return self.bedrock.model_for(self.name) if self.llm_on() else self.local_model

    def decide(self, inputs: PlanningInputs, upstream: Mapping[str, pd.DataFrame],
               source_identity: str = "") -> Decision:
        """The partition's decision from its inputs and the upstream agents' values (keyed by asset name)."""
        raise NotImplementedError
