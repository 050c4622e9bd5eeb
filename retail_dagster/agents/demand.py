"""Demand-sensing agent: the local forecast engine (LightGBM + statsforecast) and, when switched on, an LLM step
that senses and adjusts within bounds."""

import dataclasses
import hashlib
import os
from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from ..core.asof import PlanningInputs
from ..core.costs import empty_usage
from ..core.fingerprint import window_fingerprint
from ..core.forecasting import LOOKBACK_DAYS, ForecastSettings, active_series, anchor_date, forecast_for_date
from ..core.plausibility import OutlierSettings, cap_outliers, explained_days
from ..resources.bedrock import BedrockResource
from .sensing_llm import sense_demand, sensing_context


def seasonal_naive_holdout_wape(inputs: PlanningInputs, anchor: pd.Timestamp, days: int = 14,
                                season: int = 7) -> Optional[float]:
    """WAPE of SeasonalNaive(7) on the holdout [anchor - days, anchor), in-stock days only (like the engine's)."""
    cut = anchor - pd.Timedelta(days=days)
    s = inputs.sales
    if s.empty or s["date"].min() > cut - pd.Timedelta(days=season):
        return None
    last_week = s[(s["date"] >= cut - pd.Timedelta(days=season)) & (s["date"] < cut)]
    naive = last_week.assign(dow=last_week["date"].dt.dayofweek)[["sku_id", "location_id", "dow", "units"]]
    actual = s[(s["date"] >= cut) & (s["date"] < anchor)]
    inv = inputs.inventory_history
    if inv is not None and len(inv):
        out = inv[(inv["date"] >= cut) & (inv["date"] < anchor) & (inv["on_hand"] <= 0)]
        actual = actual.merge(out[["date", "sku_id", "location_id"]], how="left", indicator=True)
        actual = actual[actual["_merge"] == "left_only"].drop(columns="_merge")
    m = actual.assign(dow=actual["date"].dt.dayofweek).merge(naive, on=["sku_id", "location_id", "dow"],
                                                             how="left", suffixes=("", "_naive"))
    denom = m["units"].sum()
    if denom <= 0:
        return None
    return float(np.abs(m["units"] - m["units_naive"].fillna(0)).sum() / denom)


def degenerate_history_note(inputs: PlanningInputs) -> str:
    """Why the forecast falls back to a statistical model for the whole group ("" when the history is ordinary):
    the engine decides (zero, profile or statsforecast), this says why, for the metadata and the audit."""
    s = inputs.sales
    if s.empty:
        return "no sales history before the planning day: new-series profile (zero when nothing is known)"
    days = s["date"].nunique()
    if float(s["units"].sum()) <= 0:
        return (f"every sale in the {days}-day history is zero: no demand model can be fitted; statistical "
                "fallback (forecast zero)")
    if days < 28:
        return f"only {days} day(s) of history: category x location profile instead of a trained model"
    if s.groupby("sku_id")["price"].nunique().max() <= 1:
        return "prices never changed in the history: no price effect can be learnt (price features constant)"
    return ""


class DemandSensingAgent(dg.ConfigurableResource):
    """Demand sensing: 14-day quantile forecasts per SKU-location from the local engine, optionally adjusted by an LLM."""

    bedrock: Optional[BedrockResource] = Field(default=None, description="LLM client; its engine switch for "
                                                                         "'demand' turns the LLM step on")
    model_cache_dir: str = Field(default=".model_cache", description="where trained models are cached per group/anchor")
    retrain_every_days: int = Field(default=7, description="retraining cadence: models are trained on a fixed grid")
    train_window_days: int = Field(default=364, description="days of history each model is trained on")
    objective: str = Field(default="tweedie", description="LightGBM objective: tweedie or poisson")
    spike_factor: float = Field(default=3.0, description="spike guard: p50 above this x the history max warns")
    cap_outliers: bool = Field(default=True, description="cap implausible sales days (per-series rolling "
                                                         "median/MAD) before training; off only to study raw data")
    outlier_mad_k: float = Field(default=15.0, description="outlier: robust z-score above its series' local median")
    outlier_level_factor: float = Field(default=20.0, description="outlier: and above this x the local upper "
                                                                  "quartile")
    history_block_factor: float = Field(default=10.0, description="blocking check: p50 above this x the series' "
                                                                  "plausible history max blocks the partition")

    def outlier_settings(self) -> OutlierSettings:
        return OutlierSettings(mad_k=self.outlier_mad_k, level_factor=self.outlier_level_factor)

    def settings(self) -> ForecastSettings:
        return ForecastSettings(retrain_every_days=self.retrain_every_days, train_window_days=self.train_window_days,
                                objective=self.objective)

    def cache_dir_for(self, source_identity: str, data_fingerprint: str = "") -> str:
        # a model depends on the data it was trained on: keyed by the content of its training window (any source
        # with the same content may share it, e.g. the pilot's arms before they diverge); by the source without one
        key = data_fingerprint or source_identity
        return os.path.join(self.model_cache_dir, hashlib.sha1(key.encode()).hexdigest()[:10])

    def training_fingerprint(self, inputs: PlanningInputs) -> str:
        """Content hash of everything the model for `inputs.date` is trained on: the input rows in its training
        span before the anchor (sales, stock, calendars, traffic), the catalog and network, and the settings."""
        st = self.settings()
        anchor = anchor_date(inputs.date, st.retrain_every_days)
        span = st.calibration_days + st.train_window_days + LOOKBACK_DAYS
        tables = {k: v for k, v in inputs.as_tables().items() if k != "lanes"}
        extra = f"{st.fingerprint()}|cap={self.cap_outliers}|{self.outlier_settings().fingerprint()}"
        return window_fingerprint(tables, anchor - pd.Timedelta(days=span), anchor, extra)

    def forecast(self, inputs: PlanningInputs, source_identity: str = "") -> tuple[pd.DataFrame, dict, pd.DataFrame]:
        """(forecast, info for metadata and checks, LLM usage). The LLM step, when on, scales each series'
        forecast by a multiplier it must keep within [0.5, 2]; malformed answers fall back to the engine."""
        settings = self.settings()
        data_fingerprint = self.training_fingerprint(inputs)  # of the raw inputs: capping is a setting
        capped_sales, outliers = cap_outliers(inputs.sales, self.outlier_settings(),
                                              explained_days(inputs.sales, inputs.events, inputs.locations))
        if self.cap_outliers:
            inputs = dataclasses.replace(inputs, sales=capped_sales)
        frame, info = forecast_for_date(inputs.as_tables(), inputs.date, inputs.sku_group, settings,
                                        self.cache_dir_for(source_identity, data_fingerprint))
        info["training_fingerprint"] = data_fingerprint
        anchor = anchor_date(inputs.date, settings.retrain_every_days)
        holdout = info.get("holdout") or {}
        engine_entry = holdout.get(settings.model_name) or {}
        info["check_holdout"] = {"engine_wape": engine_entry.get("wape"),
                                 "seasonal_naive_wape": seasonal_naive_holdout_wape(inputs, anchor)}
        info["expected_series"] = active_series(inputs)
        info["data_note"] = degenerate_history_note(inputs)
        info["outliers"] = outliers
        info["outliers_capped"] = bool(self.cap_outliers)
        # what each series has plausibly sold: the yardstick of the blocking history check, capped either way
        info["series_ceiling"] = capped_sales.groupby(["sku_id", "location_id"], as_index=False)["units"].max() \
            .rename(columns={"units": "history_max"})
        frame = frame.assign(engine="local")
        if self.bedrock is None or self.bedrock.engine_for("demand") != "bedrock" or frame.empty:
            return frame, info, empty_usage()
        adjusted, usage = sense_demand(frame, sensing_context(inputs), self.bedrock)
        return adjusted, info, usage
