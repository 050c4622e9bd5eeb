"""Every bad-input case gets a clear error naming the table, file, column and offending rows."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from retail_dagster.core.contracts import ContractError, validate_table, validate_tables
from retail_dagster.core.loading import load_tables, write_tables


def _err(tables, name, mutate):
    broken = {k: v.copy() for k, v in tables.items()}
    broken[name] = mutate(broken[name].copy())
    with pytest.raises(ContractError) as exc:
        validate_tables(broken, files={k: f"/data/{k}.parquet" for k in broken})
    return exc.value


def _problem(err, table, column):
    hits = [p for p in err.problems if p.table == table and p.column == column]
    assert hits, f"no problem reported for {table}.{column}: {err}"
    return hits[0]


def test_clean_demo_passes(demo_tables):
    out = validate_tables(demo_tables)
    assert set(out) == set(demo_tables)
    assert out["sales"]["date"].dtype == "datetime64[ns]"


def test_missing_and_misspelt_column(demo_tables):
    err = _err(demo_tables, "sales", lambda f: f.rename(columns={"units": "unit"}))
    p = _problem(err, "sales", "units")
    assert "missing" in p.message and "'unit'" in p.message and "misspelt" in p.message
    assert "/data/sales.parquet" in str(err)


def test_wrong_dtype_reports_rows(demo_tables):
    def mutate(f):
        f["units"] = f["units"].astype(object)
        f.loc[[3, 10], "units"] = "lots"
        return f
    p = _problem(_err(demo_tables, "sales", mutate), "sales", "units")
    assert "not a number" in p.message and p.n_rows == 2
    assert p.examples[0]["row"] == 3 and p.examples[0]["units"] == "lots"


def test_unparseable_dates(demo_tables):
    def mutate(f):
        f["date"] = f["date"].dt.strftime("%Y-%m-%d").astype(object)
        f.loc[5, "date"] = "2025-13-45"
        return f
    p = _problem(_err(demo_tables, "inventory", mutate), "inventory", "date")
    assert "unparseable date" in p.message and p.n_rows == 1


@pytest.mark.parametrize("table,column,value,words", [
    ("sales", "units", -1.0, "must be >= 0"),
    ("inventory", "on_hand", -5.0, "must be >= 0"),
    ("catalog", "unit_cost", -0.5, "must be >= 0"),
    ("sales", "price", 0.0, "must be > 0"),
    ("catalog", "base_price", -2.0, "must be > 0"),
    ("lanes", "cost_per_unit", -0.1, "must be >= 0"),
])
def test_negative_and_non_positive_values(demo_tables, table, column, value, words):
    def mutate(f):
        f.loc[f.index[:2], column] = value
        return f
    p = _problem(_err(demo_tables, table, mutate), table, column)
    assert words in p.message and p.n_rows == 2


def test_duplicate_keys(demo_tables):
    p = _problem(_err(demo_tables, "sales", lambda f: pd.concat([f, f.iloc[:4]], ignore_index=True)),
                 "sales", "date,sku_id,location_id")
    assert "duplicate key" in p.message and p.n_rows == 8


def test_unknown_sku_and_location(demo_tables):
    def mutate(f):
        f.loc[f.index[:3], "sku_id"] = "SKU_GHOST"
        return f
    p = _problem(_err(demo_tables, "sales", mutate), "sales", "sku_id")
    assert "unknown sku_id" in p.message and "SKU_GHOST" in p.message and p.n_rows == 3

    def mutate_loc(f):
        f.loc[f.index[:1], "location_id"] = "S999"
        return f
    p = _problem(_err(demo_tables, "inventory", mutate_loc), "inventory", "location_id")
    assert "S999" in p.message


def test_lanes_between_unknown_locations(demo_tables):
    def mutate(f):
        f.loc[f.index[0], "to_location"] = "NOWHERE"
        return f
    p = _problem(_err(demo_tables, "lanes", mutate), "lanes", "to_location")
    assert "NOWHERE" in p.message


def test_nan_in_required_field(demo_tables):
    def mutate(f):
        f.loc[f.index[:2], "region"] = None
        return f
    p = _problem(_err(demo_tables, "locations", mutate), "locations", "region")
    assert "missing value" in p.message and p.n_rows == 2


def test_empty_table(demo_tables):
    p = _problem(_err(demo_tables, "catalog", lambda f: f.iloc[:0]), "catalog", "*")
    assert "empty" in p.message


def test_every_problem_listed_at_once(demo_tables):
    broken = {k: v.copy() for k, v in demo_tables.items()}
    broken["sales"].loc[broken["sales"].index[:1], "price"] = -1
    broken["catalog"].loc[broken["catalog"].index[:1], "case_pack"] = 0
    with pytest.raises(ContractError) as exc:
        validate_tables(broken)
    cols = {(p.table, p.column) for p in exc.value.problems}
    assert {("sales", "price"), ("catalog", "case_pack")} <= cols


def test_csv_folder_round_trip_and_error_names_file(demo_tables, tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    for name, frame in demo_tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    loaded = load_tables(str(folder))
    pd.testing.assert_frame_equal(loaded["catalog"].reset_index(drop=True),
                                  demo_tables["catalog"].reset_index(drop=True), check_dtype=False)
    bad = demo_tables["traffic"].copy()
    bad.loc[bad.index[7], "visitors"] = -3
    bad.to_csv(folder / "traffic.csv", index=False)
    with pytest.raises(ContractError) as exc:
        load_tables(str(folder))
    msg = str(exc.value)
    assert "traffic" in msg and str(folder / "traffic.csv") in msg and "visitors" in msg and "'row': 7" in msg


def test_missing_table_file(demo_tables, tmp_path):
    write_tables({k: v for k, v in demo_tables.items() if k != "lanes"}, str(tmp_path))
    with pytest.raises(ContractError, match="lanes.*table file not found"):
        load_tables(str(tmp_path))


def test_single_table_validation_coerces_types():
    raw = pd.DataFrame({"location_id": ["A", "B"], "kind": ["store", "warehouse"], "region": ["n", "s"]})
    out, problems = validate_table("locations", raw)
    assert not problems and list(out.columns) == ["location_id", "kind", "region", "capacity_units"]
    assert np.isnan(out["capacity_units"]).all()
    bad = raw.assign(kind=["store", "depot"])
    with pytest.raises(ContractError, match="kind.*not in"):
        validate_table("locations", bad)


def test_tables_validated_side_by_side_give_the_same_frames_and_message(demo_tables, tmp_path):
    """validate_tables on two threads, and load_tables reading side by side, give the frames and the error message
    (every problem, in the same order) of one thread."""
    broken = {k: v.copy() for k, v in demo_tables.items()}
    broken["sales"].loc[broken["sales"].index[:2], "price"] = -1
    broken["inventory"].loc[broken["inventory"].index[:1], "on_hand"] = -5
    broken["traffic"].loc[broken["traffic"].index[3], "visitors"] = np.nan
    broken["lanes"] = broken["lanes"].astype({"lead_time_days": float})
    broken["lanes"].loc[broken["lanes"].index[:1], "lead_time_days"] = 1.5
    messages = []
    for threads in (1, 2):
        clean = validate_tables(demo_tables, threads=threads)
        for name, frame in validate_tables(demo_tables).items():
            pd.testing.assert_frame_equal(clean[name], frame, check_exact=True)
        with pytest.raises(ContractError) as exc:
            validate_tables(broken, threads=threads)
        messages.append(str(exc.value))
    assert messages[0] == messages[1] and messages[0].count("\n  - ") == 4
    write_tables(broken, str(tmp_path))
    with pytest.raises(ContractError) as exc:
        load_tables(str(tmp_path))
    assert str(exc.value).replace(str(tmp_path) + "/", "").count("\n  - ") == 4
    (tmp_path / "weather.parquet").write_bytes(b"not parquet")
    (tmp_path / "lanes.parquet").unlink()
    with pytest.raises(ContractError) as exc:  # unreadable and missing files: reported in table order, unvalidated
        load_tables(str(tmp_path))
    assert [(p.table, p.message[:14]) for p in exc.value.problems] == [("weather", "cannot read fi"),
                                                                       ("lanes", "table file not")]
