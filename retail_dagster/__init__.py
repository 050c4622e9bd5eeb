"""retail_dagster: a retailer's daily inventory-optimisation loop (forecast -> prices -> transfers) on Dagster."""

import warnings

# backfill_policy, pools and owners are marked beta/preview in dagster 1.13; they are used deliberately here
try:
    import dagster as _dg

    warnings.filterwarnings("ignore", category=_dg.BetaWarning)
    warnings.filterwarnings("ignore", category=_dg.PreviewWarning)
except Exception:  # pragma: no cover - core modules work without dagster
    pass
