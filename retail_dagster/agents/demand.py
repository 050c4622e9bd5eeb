"""Demand-sensing agent: the local forecast engine (LightGBM + statsforecast) and, when switched on, an LLM step
that senses and adjusts within bounds."""

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Optional

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from .. import settings as env_settings
from ..checks import DEMAND_CHECKS, forecast_check_results
from ..core.asof import PlanningInputs
from ..core.costs import empty_usage
from ..core.fingerprint import window_fingerprint
from ..core.ids import factorize, max_by_series
from ..core.forecasting import ForecastSettings, active_series, anchor_date, forecast_for_date, training_span_days
from ..core.plausibility import OutlierSettings, cap_outliers, describe_outliers, explained_days
from ..core.plots import forecast_band_svg, image_markdown, top_series
from ..display import engine_counts, md_table, num
from .base import Agent, Decision, engine_label
from .sensing_llm import sense_demand, sensing_context


def seasonal_naive_holdout_wape(inputs: PlanningInputs, anchor: pd.Timestamp,
                                days: int = ForecastSettings.calibration_days,
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
    days = _distinct_days(s["date"])
    if float(s["units"].sum()) <= 0:
        return (f"every sale in the {days}-day history is zero: no demand model can be fitted; statistical "
                "fallback (forecast zero)")
    if days < 28:
        return f"only {days} day(s) of history: category x location profile instead of a trained model"
    if not _any_price_changed(s["sku_id"], s["price"]):
        return "prices never changed in the history: no price effect can be learnt (price features constant)"
    return ""


def _distinct_days(dates: pd.Series) -> int:
    """`dates.nunique()`, counted on a day grid when every value is a midnight (a bincount, not a hash table)."""
    ns = dates.to_numpy(dtype="datetime64[ns]").view(np.int64)
    ok = ns != np.iinfo(np.int64).min  # NaT
    day_ns = 86_400 * 10 ** 9
    if not ok.all() or (ns % day_ns).any():
        return int(dates.nunique())
    day = ns // day_ns
    return int(np.count_nonzero(np.bincount(day - day.min())))


def _any_price_changed(sku_ids: pd.Series, prices: pd.Series) -> bool:
    """Whether some SKU was sold at more than one price (NaN prices ignored): the negation of "the largest number
    of distinct prices per SKU is at most 1", from each SKU's smallest and largest price."""
    sku = factorize(sku_ids)[0]
    price = prices.to_numpy(dtype=np.float64)
    ok = (sku >= 0) & ~np.isnan(price)
    if not ok.any():
        return False
    n = int(sku.max()) + 1
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lo, sku[ok], price[ok])
    np.maximum.at(hi, sku[ok], price[ok])
    return bool((hi > lo).any())


@dataclasses.dataclass
class ForecastSummary:
    """How a forecast was made: the model (anchor, training, mix), its holdout accuracy, what was capped, and the
    yardsticks of the checks. Built from the engine's report with every key required, so a renamed key fails."""

    series: int
    anchor: str
    trained_now: bool
    trained_through: Optional[str]
    train_seconds: float
    predict_seconds: float
    model_mix: dict[str, int]
    holdout: dict[str, Any]
    training_fingerprint: str
    engine_holdout_wape: Optional[float]
    seasonal_naive_holdout_wape: Optional[float]
    expected_series: pd.DataFrame  # the active SKU-locations that must be forecast
    series_ceiling: pd.DataFrame  # sku_id, location_id, history_max: what each series has plausibly sold
    outliers: pd.DataFrame  # the implausible sales days found (capped when outliers_capped)
    outliers_capped: bool
    data_note: str  # why the group falls back to a statistical model ("" for ordinary history)

    @property
    def check_holdout(self) -> dict:
        return {"engine_wape": self.engine_holdout_wape, "seasonal_naive_wape": self.seasonal_naive_holdout_wape}


class DemandSensingAgent(Agent):
    """Demand sensing: 14-day quantile forecasts per SKU-location from the local engine, optionally adjusted by an
    LLM."""

    name: ClassVar[str] = "demand"
    asset_name: ClassVar[str] = "demand_forecast"
    resource_key: ClassVar[str] = "demand_agent"
    group_name: ClassVar[str] = "demand"
    owners: ClassVar[tuple[str, ...]] = ("team:demand-planning",)
    tag: ClassVar[str] = "demand_sensing"
    checks: ClassVar[tuple] = tuple(DEMAND_CHECKS)
    local_model: ClassVar[str] = "local_forecaster"  # the audit names the model mix instead (see decide)
    default_llm_model: ClassVar[str] = "us.meta.llama4-maverick-17b-instruct-v1:0"
    description: ClassVar[str] = """Daily demand forecast for the 14 days from the planning day, per active \
SKU-location, with p10/p50/p90.

A global LightGBM (Tweedie) model per SKU group with calendar, price, promotion, event, weather and traffic
features, statsforecast models for intermittent series, a category x location profile for new series;
negative-binomial quantiles calibrated on a holdout. Models retrain on a weekly grid and are cached."""

    model_cache_dir: str = Field(default=".model_cache", description="where trained models are cached per group/anchor")
    retrain_every_days: int = Field(default=ForecastSettings.retrain_every_days,
                                    description="retraining cadence: models are trained on a fixed grid")
    train_window_days: int = Field(default=ForecastSettings.train_window_days,
                                   description="days of history each model is trained on")
    objective: str = Field(default=ForecastSettings.objective, description="LightGBM objective: tweedie or poisson")
    blend_weight: float = Field(default=0.0, ge=0.0, le=1.0,
                                description="forecast combination: weight of seasonal exponential smoothing in the "
                                            "mean (0 = off; 0.3 helped 14-day totals on M5, hurt them on data with "
                                            "promotions: see the README)")
    censored_imputation: Literal["mean", "conditional"] = Field(
        default=ForecastSettings.censored_imputation,
        description="a stocked-out day's demand: mean (the last 4 weeks' in-stock days) or conditional (E[demand | "
                    "demand >= the day's sales], for data where days sell out; off by default: see the README)")
    spike_factor: float = Field(default=3.0, description="spike guard: p50 above this x the history max warns")
    cap_outliers: bool = Field(default=True, description="cap implausible sales days (per-series rolling "
                                                         "median/MAD) before training; off only to study raw data")
    outlier_mad_k: float = Field(default=OutlierSettings.mad_k,
                                 description="outlier: robust z-score above its series' local median")
    outlier_level_factor: float = Field(default=OutlierSettings.level_factor,
                                        description="outlier: and above this x the local upper quartile")
    history_block_factor: float = Field(default=10.0, description="blocking check: p50 above this x the series' "
                                                                  "plausible history max blocks the partition")

    @classmethod
    def from_settings(cls, bedrock):
        return cls(bedrock=bedrock, model_cache_dir=env_settings.model_cache_path())

    def outlier_settings(self) -> OutlierSettings:
        return OutlierSettings(mad_k=self.outlier_mad_k, level_factor=self.outlier_level_factor)

    def settings(self) -> ForecastSettings:
        return ForecastSettings(retrain_every_days=self.retrain_every_days, train_window_days=self.train_window_days,
                                objective=self.objective, blend_weights=(float(self.blend_weight),),
                                censored_imputation=self.censored_imputation)

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
        span = training_span_days(st)
        tables = {k: v for k, v in inputs.as_tables().items() if k != "lanes"}
        extra = f"{st.fingerprint()}|cap={self.cap_outliers}|{self.outlier_settings().fingerprint()}"
        return window_fingerprint(tables, anchor - pd.Timedelta(days=span), anchor, extra)

    def forecast(self, inputs: PlanningInputs, source_identity: str = "") -> tuple[pd.DataFrame, ForecastSummary,
                                                                                   pd.DataFrame]:
        """(forecast, summary, LLM usage). The LLM step, when on, scales each series' forecast by a multiplier it
        must keep within [0.5, 2]; malformed answers fall back to the engine."""
        settings = self.settings()
        data_fingerprint = self.training_fingerprint(inputs)  # of the raw inputs: capping is a setting
        capped_sales, outliers = cap_outliers(inputs.sales, self.outlier_settings(),
                                              explained_days(inputs.sales, inputs.events, inputs.locations))
        if self.cap_outliers:
            inputs = dataclasses.replace(inputs, sales=capped_sales)
        frame, info = forecast_for_date(inputs.as_tables(), inputs.date, inputs.sku_group, settings,
                                        self.cache_dir_for(source_identity, data_fingerprint))
        anchor = anchor_date(inputs.date, settings.retrain_every_days)
        engine_entry = (info["holdout"] or {}).get(settings.model_name) or {}
        summary = ForecastSummary(
            series=int(info["series"]), anchor=info["anchor"], trained_now=bool(info["trained_now"]),
            trained_through=info["trained_through"], train_seconds=float(info["train_seconds"] or 0.0),
            predict_seconds=float(info["predict_seconds"] or 0.0), model_mix=dict(info["model_mix"]),
            holdout=info["holdout"], training_fingerprint=data_fingerprint,
            engine_holdout_wape=engine_entry.get("wape"),
            seasonal_naive_holdout_wape=seasonal_naive_holdout_wape(inputs, anchor),
            expected_series=active_series(inputs),
            # what each series has plausibly sold: the yardstick of the blocking history check, capped either way
            series_ceiling=max_by_series(capped_sales, "units").rename(columns={"units": "history_max"}),
            outliers=outliers, outliers_capped=bool(self.cap_outliers), data_note=degenerate_history_note(inputs))
        frame = frame.assign(engine="local")
        if not self.llm_on() or frame.empty:
            return frame, summary, empty_usage()
        adjusted, usage = sense_demand(frame, sensing_context(inputs), self.bedrock)
        return adjusted, summary, usage

    def decide(self, inputs: PlanningInputs, upstream: Mapping[str, pd.DataFrame],
               source_identity: str = "") -> Decision:
        forecast, summary, usage = self.forecast(inputs, source_identity)
        checks = list(forecast_check_results(forecast, inputs, summary.expected_series, summary.check_holdout,
                                             self.spike_factor, ceiling=summary.series_ceiling,
                                             block_factor=self.history_block_factor, outliers=summary.outliers))
        warnings = [f"{inputs.sku_group}: {summary.data_note}"] if summary.data_note else []
        if len(summary.outliers):
            warnings.append(f"{describe_outliers(summary.outliers)}; " + (
                "capped before training" if summary.outliers_capped else "NOT capped (cap_outliers off)"))
        outliers = summary.outliers
        return Decision(
            frame=forecast, summary=summary, checks=checks, usage=usage, engine=engine_label(forecast),
            model=json.dumps(summary.model_mix), n_sku_locations=summary.series,
            metadata=forecast_metadata(forecast, inputs, summary), audit_records=forecast_decisions(forecast),
            audit_extra={"model_anchor": summary.anchor, "trained_through": summary.trained_through,
                         "training_fingerprint": summary.training_fingerprint, "data_note": summary.data_note,
                         "implausible_sales": outliers.astype({"date": str}).to_dict("records")[:50]
                         if len(outliers) else []},
            notes=[f"forecast {summary.series} series; model anchor {summary.anchor} "
                   f"({'trained now' if summary.trained_now else 'cached'})"],
            warnings=warnings)


def forecast_metadata(forecast: pd.DataFrame, inputs: PlanningInputs, summary: ForecastSummary) -> dict:
    """UI metadata: rows, series, model mix, holdout accuracy, biggest movers, a plot of bands vs history."""
    per_series = forecast.groupby(["sku_id", "location_id"], as_index=False)["mean"].sum().rename(
        columns={"mean": "forecast_14d"})
    recent = inputs.sales[inputs.sales["date"] >= inputs.date - pd.Timedelta(days=28)]
    last = recent.groupby(["sku_id", "location_id"], as_index=False)["units"].sum()
    last["last_28d_per_14d"] = last["units"] / 2
    movers = per_series.merge(last[["sku_id", "location_id", "last_28d_per_14d"]], how="left").fillna(0)
    movers["change"] = movers["forecast_14d"] - movers["last_28d_per_14d"]
    movers = movers.reindex(movers["change"].abs().sort_values(ascending=False).index)
    meta = {
        "rows": dg.MetadataValue.int(len(forecast)),
        "series": dg.MetadataValue.int(int(len(per_series))),
        "forecast_units_14d": num(float(forecast["mean"].sum())),
        "engines": engine_counts(forecast),
        "model_mix": dg.MetadataValue.json(summary.model_mix),
        "model_anchor": dg.MetadataValue.text(str(summary.anchor)),
        "trained_now": dg.MetadataValue.bool(summary.trained_now),
        "train_seconds": num(summary.train_seconds),
        "predict_seconds": num(summary.predict_seconds),
        "implausible_sales_capped": dg.MetadataValue.int(int(len(summary.outliers))),
        "data_note": dg.MetadataValue.text(summary.data_note or "ordinary history"),
        "biggest_movers": md_table(movers[["sku_id", "location_id", "last_28d_per_14d", "forecast_14d", "change"]]),
    }
    if summary.engine_holdout_wape is not None:
        meta["holdout_wape"] = num(float(summary.engine_holdout_wape))
    if summary.seasonal_naive_holdout_wape is not None:
        meta["holdout_wape_seasonal_naive"] = num(float(summary.seasonal_naive_holdout_wape))
    top = top_series(forecast, 3) if env_settings.metadata_charts() else []
    if top:
        svg = forecast_band_svg(inputs.sales, forecast, top)
        meta["forecast_bands"] = dg.MetadataValue.md(image_markdown(svg, "forecast", "image/svg+xml"))
    return meta


def forecast_decisions(forecast: pd.DataFrame) -> pd.DataFrame:
    """One audit record per SKU-location: the 14-day totals and the first day's band, model and engine."""
    if forecast.empty:
        return forecast
    keys = ["sku_id", "location_id"]
    f = forecast.sort_values(keys + ["horizon_day"])
    agg = f.groupby(keys, as_index=False).agg(mean_14d=("mean", "sum"), p10_day1=("p10", "first"),
                                              p50_day1=("p50", "first"), p90_day1=("p90", "first"),
                                              model=("model", "first"), engine=("engine", "first"))
    for col in ("llm_adjustment", "llm_reason"):
        if col in f.columns:
            agg[col] = f.groupby(keys)[col].first().to_numpy()
    return agg
