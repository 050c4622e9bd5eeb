"""Dynamic-pricing agent: elasticity-based price optimisation inside the guardrails and, when switched on, an
LLM that chooses among the guardrail-compliant candidates; whatever it chooses passes the guardrails again."""

import dataclasses
import hashlib
import io
import os
from collections.abc import Mapping
from typing import ClassVar, Optional

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from .. import settings as env_settings
from ..checks import PRICE_CHECKS, price_check_results
from ..core.asof import PlanningInputs
from ..core.costs import empty_usage
from ..core.elasticity import estimate_elasticities
from ..core.files import atomic_write_local
from ..core.fingerprint import window_fingerprint
from ..core.forecasting import anchor_date
from ..core.guardrails import GuardrailSettings, apply_guardrails, guardrail_violations, price_changed
from ..core.plausibility import OutlierSettings, cap_outliers, explained_days
from ..core.pricing import PricingSettings, price_candidates, recommend_prices
from ..display import engine_counts, md_table, num
from .base import Agent, Decision, engine_label
from .pricing_llm import choose_prices

_G = GuardrailSettings()  # the defaults below are the core dataclass's: one place sets a guardrail's default
_P = PricingSettings()


class GuardrailConfig(dg.Config):
    """The hard pricing rules (core.guardrails.GuardrailSettings) as run config; every default is the dataclass's."""

    max_daily_change_pct: float = Field(default=_G.max_daily_change_pct,
                                        description="largest move from the current price, percent")
    margin_floor_pct: float = Field(default=_G.margin_floor_pct, description="price >= unit cost x (1 + pct/100)")
    msrp_ceiling: bool = Field(default=_G.msrp_ceiling, description="price <= MSRP")
    map_floor: bool = Field(default=_G.map_floor, description="price >= MAP price where set")
    price_endings: list[float] = Field(default=list(_G.price_endings),
                                       description="allowed cents endings ([] = any cent)")
    min_days_between_changes: int = Field(default=_G.min_days_between_changes,
                                          description="days since the last regular price change")
    promo_lock: bool = Field(default=_G.promo_lock, description="no change while a promotion runs")
    omnibus_lookback_days: int = Field(default=_G.omnibus_lookback_days,
                                       description="EU Omnibus: lowest price of the prior N days")
    min_price: float = Field(default=_G.min_price, description="absolute price floor, USD")
    category_overrides: dict[str, dict[str, float]] = Field(
        default={}, description="per-category overrides, e.g. {'electronics': {'max_daily_change_pct': 5}}")

    def settings(self) -> GuardrailSettings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(GuardrailSettings)}
        values["price_endings"] = tuple(self.price_endings)
        values["category_overrides"] = {k: dict(v) for k, v in self.category_overrides.items()}
        return GuardrailSettings(**values)


@dataclasses.dataclass
class PriceSummary:
    """What the day's recommendations do: how many prices change (up, down, clamped by a guardrail), the expected
    margin at current and recommended prices, and the guardrail violations found by the blocking check."""

    rows: int
    changed: int
    changed_up: int
    changed_down: int
    clamped: int
    expected_margin_current_usd: float
    expected_margin_recommended_usd: float
    violations: pd.DataFrame

    @classmethod
    def of(cls, recs: pd.DataFrame, violations: pd.DataFrame) -> "PriceSummary":
        changed = price_changed(recs["current_price"], recs["recommended_price"]) if len(recs) else np.zeros(0, bool)
        up = changed & (recs["change_pct"].to_numpy(dtype=float) > 0) if len(recs) else changed
        return cls(rows=len(recs), changed=int(changed.sum()), changed_up=int(up.sum()),
                   changed_down=int((changed & ~up).sum()),
                   clamped=int(recs["clamped"].astype(bool).sum()) if len(recs) else 0,
                   expected_margin_current_usd=float(recs["expected_margin_current"].sum()) if len(recs) else 0.0,
                   expected_margin_recommended_usd=float(recs["expected_margin_recommended"].sum())
                   if len(recs) else 0.0, violations=violations)


class PricingAgent(Agent):
    """Recommended price per SKU-location that maximises expected 14-day gross profit within hard guardrails."""

    name: ClassVar[str] = "pricing"
    asset_name: ClassVar[str] = "price_recommendations"
    resource_key: ClassVar[str] = "pricing_agent"
    group_name: ClassVar[str] = "pricing"
    owners: ClassVar[tuple[str, ...]] = ("team:pricing",)
    tag: ClassVar[str] = "pricing"
    upstream: ClassVar[tuple[str, ...]] = ("demand_forecast",)
    checks: ClassVar[tuple] = tuple(PRICE_CHECKS)
    local_model: ClassVar[str] = "elasticity_optimizer"
    default_llm_model: ClassVar[str] = "qwen.qwen3-235b-a22b-2507-v1:0"
    description: ClassVar[str] = """Recommended regular price per SKU-location: maximises expected 14-day gross \
profit from the forecast and a hierarchically pooled price elasticity, with stock-aware markdowns and raises, inside
the hard guardrails (max daily change, margin floor, MSRP, MAP, price endings, min days between changes, promotion
lock) and with the lowest price of the prior 30 days recorded for every markdown (EU Omnibus)."""

    model_cache_dir: Optional[str] = Field(default=None, description="where weekly elasticity estimates are "
                                                                     "cached (None = estimate in every run)")
    reestimate_every_days: int = Field(default=7, description="elasticities are estimated on a fixed weekly grid "
                                                              "from data before the grid date")
    guardrails: GuardrailConfig = Field(default_factory=GuardrailConfig,
                                        description="the hard rules: engine, LLM re-check and checks all read these")
    revenue_weight: float = Field(default=_P.revenue_weight, description="objective = margin + weight x revenue")
    target_cover_days: float = Field(default=_P.target_cover_days,
                                     description="stock beyond this many days of demand is excess")
    max_changed_share: float = Field(default=0.35, description="warn when more SKU-locations change price")
    max_at_bound_share: float = Field(default=0.25, description="warn when more changes sit at the max bound")
    cap_outliers: bool = Field(default=True, description="cap implausible sales days (as the demand agent does) "
                                                         "before estimating elasticities")

    @classmethod
    def from_settings(cls, bedrock):
        return cls(bedrock=bedrock, model_cache_dir=env_settings.model_cache_path())

    def guardrail_settings(self) -> GuardrailSettings:
        return self.guardrails.settings()

    def settings(self) -> PricingSettings:
        return PricingSettings(guardrails=self.guardrail_settings(), revenue_weight=self.revenue_weight,
                               target_cover_days=self.target_cover_days)

    def elasticities(self, inputs: PlanningInputs, source_identity: str = "") -> pd.DataFrame:
        """Own-price elasticities per SKU, estimated from data before the week's grid date (so every day of a week,
        and a backfill of it, uses the same estimate), with stock-out days left out and implausible sales days
        capped (as the demand agent caps them); cached per group and week. `inputs` are the raw inputs: capping runs
        only when the estimate is not cached (it is causal, so capping the window equals capping all history)."""
        anchor = anchor_date(inputs.date, self.reestimate_every_days)
        outlier_settings = OutlierSettings()
        # the estimation window and the days its capping looks back on
        lookback = (self.settings().elasticity.history_days or 3650) + 1 + outlier_settings.window_days
        path = None
        if self.model_cache_dir:
            # keyed by the raw content of that span, so changed inputs re-estimate
            content = window_fingerprint({"sales": inputs.sales, "inventory": inputs.inventory_history,
                                          "events": inputs.events, "catalog": inputs.catalog,
                                          "locations": inputs.locations},
                                         anchor - pd.Timedelta(days=lookback), anchor,
                                         f"cap={self.cap_outliers}|{outlier_settings.fingerprint()}")
            # the content, not the source: the same data gives the same estimate wherever it comes from
            key = hashlib.sha1(f"{self.settings().elasticity}|{content}".encode()).hexdigest()[:10]
            path = os.path.join(self.model_cache_dir, "elasticity", key, inputs.sku_group,
                                f"{anchor:%Y-%m-%d}.parquet")
            if os.path.exists(path):
                return pd.read_parquet(path)
        # that span only (what the key covers), not all the history the run was handed: capping is causal, so the
        # window's rows are capped the same, and a copy of the whole history is not made
        d = inputs.sales["date"]
        sales = inputs.sales[((d < anchor) & (d >= anchor - pd.Timedelta(days=lookback))).to_numpy()]
        if self.cap_outliers:
            sales = cap_outliers(sales, outlier_settings, explained_days(sales, inputs.events, inputs.locations))[0]
        inv = inputs.inventory_history
        inv = inv[inv["date"] < anchor] if inv is not None else None
        est = estimate_elasticities(sales, inputs.catalog, inv, inputs.events[inputs.events["date"] < anchor],
                                    self.settings().elasticity, locations=inputs.locations, unpooled=False)
        if path:
            buf = io.BytesIO()
            est.to_parquet(buf, index=False)
            atomic_write_local(path, buf.getvalue())
        return est

    def recommend(self, inputs: PlanningInputs, forecast: pd.DataFrame,
                  source_identity: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
        """(recommendations, LLM usage). The LLM, when on, picks among compliant candidates; the guardrails run
        again on its pick, so nothing it says can leave the hard bounds."""
        s = self.settings()
        elasticities = self.elasticities(inputs, source_identity)  # sales units matter only there (capped there)
        recs = recommend_prices(inputs, forecast, s, elasticities)
        if not self.llm_on() or recs.empty:
            return recs, empty_usage()
        candidates = price_candidates(inputs, forecast, s, elasticities)
        chosen, usage = choose_prices(candidates, recs, inputs.catalog, self.bedrock)
        return self._reapply_guardrails(chosen, recs, inputs), usage

    def _reapply_guardrails(self, chosen: pd.DataFrame, engine_recs: pd.DataFrame,
                            inputs: PlanningInputs) -> pd.DataFrame:
        cat_cols = [c for c in ("unit_cost", "msrp", "map_price", "category") if c not in chosen.columns]
        frame = chosen.merge(inputs.catalog[["sku_id"] + cat_cols], on="sku_id", how="left") if cat_cols else chosen
        checked = apply_guardrails(frame.drop(columns=["reason", "clamped", "clamp_rule"], errors="ignore")
                                   .assign(wished_price=chosen["recommended_price"].to_numpy()),
                                   self.guardrail_settings())
        out = chosen.copy()
        llm_price = chosen["recommended_price"].to_numpy(dtype=float)
        final = checked["recommended_price"].to_numpy(dtype=float)
        cut = price_changed(llm_price, final)
        out["recommended_price"] = final
        out["clamped"] = out["clamped"].to_numpy(dtype=bool) | cut
        out["clamp_rule"] = np.where(cut, checked["clamp_rule"].to_numpy(), out["clamp_rule"].to_numpy())
        llm_moved = price_changed(engine_recs["recommended_price"], final)
        out["reason"] = np.where(llm_moved, out["reason"].astype(str) + ";LLM_CHOICE", out["reason"])
        out["change_pct"] = np.round((final / out["current_price"].to_numpy(dtype=float) - 1) * 100, 4)
        return out

    def violations(self, recs: pd.DataFrame, inputs: PlanningInputs) -> pd.DataFrame:
        return guardrail_violations(recs, inputs.catalog, self.guardrail_settings(), inputs.promotions, inputs.date)

    def decide(self, inputs: PlanningInputs, upstream: Mapping[str, pd.DataFrame],
               source_identity: str = "") -> Decision:
        forecast = upstream["demand_forecast"]
        recs, usage = self.recommend(inputs, forecast, source_identity)
        violations = self.violations(recs, inputs)
        guardrails = self.guardrail_settings()
        checks = list(price_check_results(recs, forecast, violations, guardrails, inputs.catalog,
                                          self.max_changed_share, self.max_at_bound_share))
        summary = PriceSummary.of(recs, violations)
        return Decision(frame=recs, summary=summary, checks=checks, usage=usage, engine=engine_label(recs),
                        model=self.model_label(), n_sku_locations=len(recs), metadata=price_metadata(recs, summary),
                        audit_extra={"guardrail_settings": guardrails.__dict__ | {
                            "category_overrides": dict(guardrails.category_overrides)}})


def price_metadata(recs: pd.DataFrame, summary: PriceSummary) -> dict:
    """Counts by reason, average change, expected margin uplift, the largest changes."""
    if recs.empty:
        return {"rows": dg.MetadataValue.int(0)}
    reasons = recs["reason"].astype(str).str.split(";").explode().value_counts()
    changed = price_changed(recs["current_price"], recs["recommended_price"])
    cur, rec = summary.expected_margin_current_usd, summary.expected_margin_recommended_usd
    largest = recs.reindex(recs["change_pct"].abs().sort_values(ascending=False).index).head(10)
    return {
        "rows": dg.MetadataValue.int(summary.rows),
        "changed": dg.MetadataValue.int(summary.changed),
        "changed_up": dg.MetadataValue.int(summary.changed_up),
        "changed_down": dg.MetadataValue.int(summary.changed_down),
        "avg_change_pct": num(float(recs.loc[changed, "change_pct"].mean()) if changed.any() else 0.0),
        "expected_margin_current_usd": num(cur),
        "expected_margin_recommended_usd": num(rec),
        "expected_margin_uplift_usd": num(rec - cur),
        "expected_margin_uplift_pct": num((rec / cur - 1) * 100 if cur else 0.0),
        "clamped": dg.MetadataValue.int(summary.clamped),
        "reasons": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
        "engines": engine_counts(recs),
        "largest_changes": md_table(largest[["sku_id", "location_id", "current_price", "recommended_price",
                                             "change_pct", "elasticity", "days_of_cover", "reason"]]),
    }
