"""retail_dagster: a retailer's daily inventory-optimisation loop (forecast -> prices -> transfers) on Dagster."""

import warnings

# backfill_policy, pools and owners are marked beta/preview in dagster 1.13; they are used deliberately here
# (the classes dagster exports, from the small module that defines them: importing dagster itself here took 1.1 s
# before anything, e.g. before `retail-dagster run --workers` could start its preloading server)
try:
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
except Exception:  # pragma: no cover - core modules work without dagster
    pass
