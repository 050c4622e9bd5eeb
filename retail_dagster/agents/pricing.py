"""Dynamic-pricing agent: elasticity-based price optimisation inside the guardrails and, when switched on, an
LLM that chooses among the guardrail-compliant candidates; whatever it chooses passes the guardrails again."""

import dataclasses
import hashlib
import io
import os
from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from ..core.asof import PlanningInputs
from ..core.costs import empty_usage
from ..core.elasticity import estimate_elasticities
from ..core.fingerprint import window_fingerprint
from ..core.forecasting import anchor_date
from ..core.plausibility import cap_outliers, explained_days
from ..core.guardrails import GuardrailSettings, apply_guardrails, guardrail_violations
from ..core.pricing import PricingSettings, price_candidates, recommend_prices
from ..resources.bedrock import BedrockResource
from ..core.files import atomic_write_local
from .pricing_llm import choose_prices


class PricingAgent(dg.ConfigurableResource):
    """Recommended price per SKU-location that maximises expected 14-day gross profit within hard guardrails."""

    bedrock: Optional[BedrockResource] = Field(default=None, description="LLM client; engine switch per agent")
    cache_dir: Optional[str] = Field(default=None, description="where weekly elasticity estimates are cached "
                                                               "(None = estimate in every run)")
    reestimate_every_days: int = Field(default=7, description="elasticities are estimated on a fixed weekly grid "
                                                              "from data before the grid date")
    max_daily_change_pct: float = Field(default=10.0, description="largest move from the current price, percent")
    margin_floor_pct: float = Field(default=15.0, description="price >= unit cost x (1 + pct/100)")
    price_endings: list[float] = Field(default=[0.99, 0.49], description="allowed cents endings ([] = any cent)")
    min_days_between_changes: int = Field(default=7, description="days since the last regular price change")
    promo_lock: bool = Field(default=True, description="no change while a promotion runs")
    omnibus_lookback_days: int = Field(default=30, description="EU Omnibus: lowest price of the prior N days")
    category_overrides: dict[str, dict[str, float]] = Field(
        default={}, description="per-category guardrail overrides, e.g. {'electronics': {'max_daily_change_pct': 5}}")
    revenue_weight: float = Field(default=0.0, description="objective = margin + weight x revenue")
    target_cover_days: float = Field(default=28.0, description="stock beyond this many days of demand is excess")
    max_changed_share: float = Field(default=0.35, description="warn when more SKU-locations change price")
    max_at_bound_share: float = Field(default=0.25, description="warn when more changes sit at the max bound")
    cap_outliers: bool = Field(default=True, description="cap implausible sales days (as the demand agent does) "
                                                         "before estimating elasticities")

    def guardrails(self) -> GuardrailSettings:
        return GuardrailSettings(max_daily_change_pct=self.max_daily_change_pct,
                                 margin_floor_pct=self.margin_floor_pct, price_endings=tuple(self.price_endings),
                                 min_days_between_changes=self.min_days_between_changes, promo_lock=self.promo_lock,
                                 omnibus_lookback_days=self.omnibus_lookback_days,
                                 category_overrides=dict(self.category_overrides))

    def settings(self) -> PricingSettings:
        return PricingSettings(guardrails=self.guardrails(), revenue_weight=self.revenue_weight,
                               target_cover_days=self.target_cover_days)

    def elasticities(self, inputs: PlanningInputs, source_identity: str = "") -> pd.DataFrame:
        """Own-price elasticities per SKU, estimated from data before the week's grid date (so every day of a week,
        and a backfill of it, uses the same estimate), with stock-out days left out; cached per group and week."""
        anchor = anchor_date(inputs.date, self.reestimate_every_days)
        path = None
        if self.cache_dir:
            # keyed by the content of the estimation window, so changed inputs re-estimate
            lookback = (self.settings().elasticity.history_days or 3650) + 1
            content = window_fingerprint({"sales": inputs.sales, "inventory": inputs.inventory_history,
                                          "events": inputs.events, "catalog": inputs.catalog,
                                          "locations": inputs.locations},
                                         anchor - pd.Timedelta(days=lookback), anchor, f"cap={self.cap_outliers}")
            # the content, not the source: the same data gives the same estimate wherever it comes from
            key = hashlib.sha1(f"{self.settings().elasticity}|{content}".encode()).hexdigest()[:10]
            path = os.path.join(self.cache_dir, "elasticity", key, inputs.sku_group, f"{anchor:%Y-%m-%d}.parquet")
            if os.path.exists(path):
                return pd.read_parquet(path)
        sales = inputs.sales[inputs.sales["date"] < anchor]
        inv = inputs.inventory_history
        inv = inv[inv["date"] < anchor] if inv is not None else None
        est = estimate_elasticities(sales, inputs.catalog, inv, inputs.events[inputs.events["date"] < anchor],
                                    self.settings().elasticity, locations=inputs.locations)
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
        if self.cap_outliers:
            explained = explained_days(inputs.sales, inputs.events, inputs.locations)
            inputs = dataclasses.replace(inputs, sales=cap_outliers(inputs.sales, explained=explained)[0])
        elasticities = self.elasticities(inputs, source_identity)
        recs = recommend_prices(inputs, forecast, s, elasticities)
        if self.bedrock is None or self.bedrock.engine_for("pricing") != "bedrock" or recs.empty:
            return recs, empty_usage()
        candidates = price_candidates(inputs, forecast, s, elasticities)
        chosen, usage = choose_prices(candidates, recs, inputs.catalog, self.bedrock)
        return self._reapply_guardrails(chosen, recs, inputs), usage

    def _reapply_guardrails(self, chosen: pd.DataFrame, engine_recs: pd.DataFrame,
                            inputs: PlanningInputs) -> pd.DataFrame:
        cat_cols = [c for c in ("unit_cost", "msrp", "map_price", "category") if c not in chosen.columns]
        frame = chosen.merge(inputs.catalog[["sku_id"] + cat_cols], on="sku_id", how="left") if cat_cols else chosen
        checked = apply_guardrails(frame.drop(columns=["reason", "clamped", "clamp_rule"], errors="ignore")
                                   .assign(wished_price=chosen["recommended_price"].to_numpy()), self.guardrails())
        out = chosen.copy()
        llm_price = chosen["recommended_price"].to_numpy(dtype=float)
        final = checked["recommended_price"].to_numpy(dtype=float)
        cut = np.abs(final - llm_price) >= 0.005
        out["recommended_price"] = final
        out["clamped"] = out["clamped"].to_numpy(dtype=bool) | cut
        out["clamp_rule"] = np.where(cut, checked["clamp_rule"].to_numpy(), out["clamp_rule"].to_numpy())
        llm_moved = np.abs(final - engine_recs["recommended_price"].to_numpy(dtype=float)) >= 0.005
        out["reason"] = np.where(llm_moved, out["reason"].astype(str) + ";LLM_CHOICE", out["reason"])
        out["change_pct"] = np.round((final / out["current_price"].to_numpy(dtype=float) - 1) * 100, 4)
        return out

    def violations(self, recs: pd.DataFrame, inputs: PlanningInputs) -> pd.DataFrame:
        return guardrail_violations(recs, inputs.catalog, self.guardrails(), inputs.promotions, inputs.date)
