"""Data contracts for the input tables: columns, dtypes, units, keys, and validation.

Each table is declared once here; the loader, the CLI's `validate`, the ingest assets and the tests all use
these declarations. Validation collects every problem in a table and raises one `ContractError` whose message
names the table, the file, the column, how many rows are affected and a few examples.
"""

from __future__ import annotations

import difflib
import itertools
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd

STRING, FLOAT, INT, BOOL, DATE = "string", "float", "int", "bool", "date"
T, R = TypeVar("T"), TypeVar("R")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # one of STRING, FLOAT, INT, BOOL, DATE
    unit: str = ""
    required: bool = True  # column must be present
    nullable: bool = False  # NaN allowed in the column
    min_value: float | None = None  # inclusive lower bound
    positive: bool = False  # strictly > 0
    allowed: tuple[str, ...] | None = None
    description: str = ""


@dataclass(frozen=True)
class TableContract:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    description: str = ""
    # foreign keys: column -> (table, column)
    references: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    allow_empty: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


CONTRACTS: dict[str, TableContract] = {
    t.name: t
    for t in [
        TableContract(
            "catalog",
            key=("sku_id",),
            description="One row per SKU: its group, category, costs and price limits.",
            columns=(
                Column("sku_id", STRING),
                Column("sku_group", STRING, description="partition dimension; groups come from here"),
                Column("category", STRING),
                Column("description", STRING, required=False, nullable=True, description="free text, untrusted"),
                Column("unit_cost", FLOAT, "USD/unit", min_value=0.0),
                Column("base_price", FLOAT, "USD/unit", positive=True),
                Column("msrp", FLOAT, "USD/unit", positive=True, description="price ceiling"),
                Column("map_price", FLOAT, "USD/unit", required=False, nullable=True, positive=True,
                       description="minimum advertised price (floor), optional"),
                Column("case_pack", INT, "units", min_value=1),
            ),
        ),
        TableContract(
            "locations",
            key=("location_id",),
            description="Stores and warehouses.",
            columns=(
                Column("location_id", STRING),
                Column("kind", STRING, allowed=("store", "warehouse")),
                Column("region", STRING),
                Column("capacity_units", FLOAT, "units", required=False, nullable=True, min_value=0.0),
            ),
        ),
        TableContract(
            "sales",
            key=("date", "sku_id", "location_id"),
            description="Daily observed sales (censored by stock) and the selling price that day.",
            references={"sku_id": ("catalog", "sku_id"), "location_id": ("locations", "location_id")},
            columns=(
                Column("date", DATE),
                Column("sku_id", STRING),
                Column("location_id", STRING),
                Column("units", FLOAT, "units/day", min_value=0.0),
                Column("price", FLOAT, "USD/unit", positive=True),
                Column("on_promotion", BOOL),
            ),
        ),
        TableContract(
            "inventory",
            key=("date", "sku_id", "location_id"),
            description="End-of-day stock position.",
            allow_empty=True,
            references={"sku_id": ("catalog", "sku_id"), "location_id": ("locations", "location_id")},
            columns=(
                Column("date", DATE),
                Column("sku_id", STRING),
                Column("location_id", STRING),
                Column("on_hand", FLOAT, "units", min_value=0.0),
                Column("in_transit", FLOAT, "units", min_value=0.0),
            ),
        ),
        TableContract(
            "promotions",
            key=("sku_id", "location_id", "start_date"),
            description="Planned promotions (known in advance), inclusive date range.",
            references={"sku_id": ("catalog", "sku_id"), "location_id": ("locations", "location_id")},
            allow_empty=True,
            columns=(
                Column("sku_id", STRING),
                Column("location_id", STRING),
                Column("start_date", DATE),
                Column("end_date", DATE),
                Column("discount_pct", FLOAT, "% off regular price", min_value=0.0),
            ),
        ),
        TableContract(
            "events",
            key=("date", "region", "event_name"),
            description="Holidays and local events per region ('ALL' = every region).",
            allow_empty=True,
            columns=(
                Column("date", DATE),
                Column("region", STRING),
                Column("event_name", STRING),
                Column("event_type", STRING),
            ),
        ),
        TableContract(
            "weather",
            key=("date", "region"),
            description="Daily weather per region (observed for the past, forecast for the coming days).",
            allow_empty=True,
            columns=(
                Column("date", DATE),
                Column("region", STRING),
                Column("temperature_c", FLOAT, "degC"),
                Column("precipitation_mm", FLOAT, "mm", min_value=0.0),
            ),
        ),
        TableContract(
            "traffic",
            key=("date", "location_id"),
            description="Daily store visitors.",
            allow_empty=True,
            references={"location_id": ("locations", "location_id")},
            columns=(
                Column("date", DATE),
                Column("location_id", STRING),
                Column("visitors", FLOAT, "people/day", min_value=0.0),
            ),
        ),
        TableContract(
            "lanes",
            key=("from_location", "to_location"),
            description="Transfer lanes between locations.",
            allow_empty=True,
            references={"from_location": ("locations", "location_id"), "to_location": ("locations", "location_id")},
            columns=(
                Column("from_location", STRING),
                Column("to_location", STRING),
                Column("cost_per_unit", FLOAT, "USD/unit", min_value=0.0),
                Column("lead_time_days", INT, "days", min_value=0),
                Column("capacity_units", FLOAT, "units/day", required=False, nullable=True, min_value=0.0),
            ),
        ),
    ]
}

TABLE_NAMES: tuple[str, ...] = tuple(CONTRACTS)


@dataclass
class Problem:
    table: str
    file: str
    column: str
    message: str
    n_rows: int = 0
    examples: list = field(default_factory=list)

    def __str__(self) -> str:
        rows = f" ({self.n_rows} row{'s' if self.n_rows != 1 else ''})" if self.n_rows else ""
        ex = f"; e.g. {self.examples}" if self.examples else ""
        return f"{self.table} [{self.file}] column '{self.column}': {self.message}{rows}{ex}"


class ContractError(ValueError):
    """One or more input tables break their data contract."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [f"{len(problems)} data contract problem(s):"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def _examples(frame: pd.DataFrame, mask: np.ndarray, cols: Iterable[str], n: int = 3) -> list:
    """A few offending rows as dicts, with their row number in the file (0-based, excluding the header)."""
    cols = [c for c in cols if c in frame.columns]
    sub = frame.loc[mask, cols].head(n)
    out = []
    for idx, row in sub.iterrows():
        rec = {"row": int(idx) if isinstance(idx, (int, np.integer)) else str(idx)}
        rec.update({c: (v.isoformat()[:10] if isinstance(v, pd.Timestamp) else v) for c, v in row.items()})
        out.append(rec)
    return out


def _string_categories(series: pd.Series) -> bool:
    """A categorical column whose categories are all str (a Parquet dictionary column of text)."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        return False
    cats = series.cat.categories
    return cats.dtype == object and pd.api.types.infer_dtype(cats, skipna=False) == "string"


def plain_strings(values: pd.Series) -> pd.Series:
    """Categorical text as plain str objects (None where missing), by one take over the categories."""
    cats = np.asarray(values.cat.categories.astype(str), dtype=object)
    codes = values.cat.codes.to_numpy()
    out = cats[np.maximum(codes, 0)] if len(cats) else np.full(len(codes), None, dtype=object)
    missing = codes < 0
    if missing.any():
        out = out.copy() if len(cats) else out
        out[missing] = None
    return pd.Series(out, index=values.index, name=values.name)


def _coerce(series: pd.Series, col: Column) -> tuple[pd.Series, np.ndarray]:
    """Coerce to the column's kind; return the coerced series and a mask of values that failed to parse."""
    if isinstance(series.dtype, pd.CategoricalDtype) and not (col.kind == STRING and _string_categories(series)):
        series = plain_strings(series)  # e.g. a dictionary-encoded date or flag column: parsed from its text
    present = series.notna().to_numpy()
    if col.kind == STRING:
        # object columns are kept as they are (cheap on 10^7 rows); dictionary-encoded (categorical) ids stay
        # categorical through the checks (isna, duplicates, foreign keys work on their integer codes) and become
        # plain strings at the end; anything else becomes str, NaN kept
        if _string_categories(series):
            return series, np.zeros(len(series), dtype=bool)
        out = series if series.dtype == object else series.astype(object).where(series.notna(), None)
        out = out.where(out.isna(), out.astype(str)) if series.dtype != object else out
        return out, np.zeros(len(series), dtype=bool)
    if col.kind == DATE:
        if series.dtype == "datetime64[ns]":  # read from Parquet as timestamps: only midnight to check
            ns = series.to_numpy().view("i8")
            if (ns[ns != np.iinfo("i8").min] % 86_400_000_000_000 == 0).all():
                return series, np.zeros(len(series), dtype=bool)
        out = pd.to_datetime(series, errors="coerce", format="mixed") if series.dtype == object else \
            pd.to_datetime(series, errors="coerce")
        if getattr(out.dt, "tz", None) is not None:
            out = out.dt.tz_localize(None)
        out = out.dt.normalize().astype("datetime64[ns]")
        return out, present & out.isna().to_numpy()
    if col.kind == BOOL:
        if series.dtype == bool:
            return series, np.zeros(len(series), dtype=bool)
        lowered = series.astype("string").str.strip().str.lower()
        mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False,
                   "t": True, "f": False, "1.0": True, "0.0": False}
        out = lowered.map(mapping)
        bad = present & out.isna().to_numpy()
        return out.astype("boolean"), bad
    # numeric
    if series.dtype == "float64":  # already numbers: nothing to parse, nothing to copy
        if col.kind == INT:
            vals = series.to_numpy()
            known = ~np.isnan(vals)
            with np.errstate(invalid="ignore"):
                return series, known & (np.mod(np.where(known, vals, 0.0), 1.0) != 0)
        return series, np.zeros(len(series), dtype=bool)
    out = pd.to_numeric(series, errors="coerce")
    bad = present & out.isna().to_numpy()
    if col.kind == INT:
        frac = out.notna().to_numpy() & (np.mod(out.fillna(0).to_numpy(dtype=float), 1.0) != 0)
        bad = bad | frac
        return out.astype("float64"), bad
    return out.astype("float64"), bad


def _int_codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """(codes, n): equal values (missing ones included) share a code, and the codes take at most n consecutive
    values: 0..n-1, or -1..n-2 for a categorical's own codes (-1 missing), read as they are (no converted copy)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(), len(values.cat.categories) + 1
    if values.dtype == "datetime64[ns]":
        ns = values.to_numpy().view("i8")
        nat = ns == np.iinfo("i8").min
        if not nat.any() and len(ns) and (ns % 86_400_000_000_000 == 0).all():
            days = (ns - ns.min()) // 86_400_000_000_000
            return days, int(days.max()) + 1
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64), max(len(uniques), 1)


def _duplicated(frame: pd.DataFrame, key: list[str]) -> np.ndarray:
    """frame.duplicated(key, keep=False) as an array: the key columns packed into one int64 per row (categorical
    codes, day numbers), then one hash pass, instead of pandas' per-column factorize and group index."""
    codes = {col: _int_codes(frame[col]) for col in key}
    if np.prod([float(n) for _, n in codes.values()]) >= 2 ** 62:
        return frame.duplicated(key, keep=False).to_numpy()

    def pack(order, rows=slice(None)) -> np.ndarray:
        # mixed radix, each digit spanning its n consecutive codes: one-to-one and order-preserving (a digit's
        # offset, -1 for categorical codes, only shifts every packing by the same constant); built in place
        packed = codes[order[0]][0][rows].astype(np.int64)
        for col in order[1:]:
            c, n = codes[col]
            packed *= n
            packed += c[rows]
        return packed

    # files are usually written sorted by their key in some column order: a strictly increasing packing (checked on
    # a prefix first, then whole) proves every key distinct without hashing millions of rows
    if len(key) <= 3 and len(frame) > 1:
        for order in itertools.permutations(key):
            head = pack(order, slice(0, 4096))
            if (head[1:] > head[:-1]).all():
                packed = pack(order)
                if (packed[1:] > packed[:-1]).all():
                    return np.zeros(len(frame), dtype=bool)
    return pd.Index(pack(key)).duplicated(keep=False)


def _may_share_data(a: pd.Series, b: pd.Series) -> bool:
    """Whether two columns may hold the same memory (numpy-backed ones compared by their buffers' bounds)."""
    def buffer(values: pd.Series):
        return values.to_numpy() if isinstance(values.dtype, np.dtype) else None  # no conversion of extensions
    x, y = buffer(a), buffer(b)
    return x is None or y is None or np.may_share_memory(x, y)


def validate_table(name: str, frame: pd.DataFrame, file: str = "<memory>",
                   known_keys: Mapping[tuple[str, str], pd.Index] | None = None,
                   raise_errors: bool = True) -> tuple[pd.DataFrame, list[Problem]]:
    """Validate and coerce one table against its contract.

    `known_keys` maps (table, column) to the valid values for foreign-key checks (e.g. catalog sku_id).
    Returns the coerced frame (contract column order, canonical dtypes) and the problems found; raises
    ContractError when there are problems and `raise_errors` is true. A clean table's frame shares no data with
    `frame`: a column that needed no coercion is copied once. (Taking the loader's columns without the copy saved
    a few tens of milliseconds a group but kept them in Arrow's memory pool for the whole run: +90 MB peak RSS.)
    """
    contract = CONTRACTS[name]
    problems: list[Problem] = []

    def add(column: str, message: str, mask: np.ndarray | None = None, cols: Iterable[str] | None = None):
        n = int(mask.sum()) if mask is not None else 0
        ex = _examples(frame, mask, cols or [column]) if mask is not None else []
        problems.append(Problem(name, file, column, message, n, ex))

    if not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1):
        frame = frame.reset_index(drop=True)  # row numbers in the messages count from 0 (a default index: no copy)
    if len(frame) == 0 and not contract.allow_empty:
        problems.append(Problem(name, file, "*", "table is empty"))

    present_cols = [str(c) for c in frame.columns]
    for col in contract.columns:
        if col.required and col.name not in present_cols:
            close = difflib.get_close_matches(col.name, present_cols, n=1, cutoff=0.6)
            hint = f"; found '{close[0]}': misspelt?" if close else f"; columns present: {present_cols}"
            problems.append(Problem(name, file, col.name, f"required column is missing{hint}"))
    if problems and raise_errors:
        raise ContractError(problems)
    if problems:
        return frame, problems

    cols: dict[str, pd.Series] = {}
    for col in contract.columns:
        if col.name not in frame.columns:
            cols[col.name] = pd.Series(np.nan, index=frame.index, dtype="float64") if col.kind in (FLOAT, INT) \
                else pd.Series(pd.NA, index=frame.index, dtype="string")
            continue
        coerced, bad = _coerce(frame[col.name], col)
        if bad.any():
            what = {DATE: "unparseable date", BOOL: "not a boolean", INT: "not a whole number",
                    FLOAT: "not a number"}.get(col.kind, "bad value")
            add(col.name, f"{what} (expected {col.kind})", bad)
        missing = coerced.isna().to_numpy() & ~bad
        if missing.any() and not col.nullable:
            add(col.name, "missing value (NaN/empty) in a required field", missing)
        if col.kind in (FLOAT, INT):
            vals = coerced.to_numpy(dtype=float, na_value=np.nan)
            finite = np.isfinite(vals)
            inf = ~finite & ~np.isnan(vals)
            if inf.any():
                add(col.name, "infinite value", inf)
            if col.positive:
                m = finite & (vals <= 0)
                if m.any():
                    add(col.name, f"must be > 0{' ' + col.unit if col.unit else ''}", m)
            if col.min_value is not None:
                m = finite & (vals < col.min_value)
                if m.any():
                    add(col.name, f"must be >= {col.min_value:g} (negative {col.unit or 'value'})", m)
        if col.allowed is not None:
            m = coerced.notna().to_numpy() & ~coerced.isin(col.allowed).to_numpy()
            if m.any():
                add(col.name, f"value not in {list(col.allowed)}", m)
        cols[col.name] = coerced
    # one block per column, as column-by-column assignment would give, without copying each column on the way
    out = pd.DataFrame(cols, copy=False)

    # duplicate keys (only when the key columns parsed)
    if all(k in out.columns for k in contract.key) and len(out):
        dup = _duplicated(out, list(contract.key))
        if dup.any():
            add(",".join(contract.key), "duplicate key", dup, contract.key)

    if name == "promotions" and len(out):
        m = (out["end_date"] < out["start_date"]).fillna(False).to_numpy()
        if m.any():
            add("end_date", "end_date before start_date", m, ["sku_id", "location_id", "start_date", "end_date"])
        m = (out["discount_pct"] >= 100).fillna(False).to_numpy()
        if m.any():
            add("discount_pct", "must be < 100 (percent off)", m)
    if name == "catalog" and len(out):
        m = (out["msrp"] < out["base_price"]).fillna(False).to_numpy()
        if m.any():
            add("msrp", "msrp below base_price", m, ["sku_id", "base_price", "msrp"])
    if name == "lanes" and len(out):
        m = (out["from_location"].astype(object) == out["to_location"].astype(object)).fillna(False).to_numpy()
        if m.any():
            add("to_location", "lane from a location to itself", m, ["from_location", "to_location"])

    for col_name, (ref_table, ref_col) in contract.references.items():
        if known_keys is None or (ref_table, ref_col) not in known_keys or col_name not in out.columns:
            continue
        valid = known_keys[(ref_table, ref_col)]
        values = out[col_name]
        if isinstance(values.dtype, pd.CategoricalDtype):  # each category looked up once, rows by their codes
            m = ~np.append(values.cat.categories.isin(valid), True)[values.cat.codes.to_numpy()]
        else:
            m = values.notna().to_numpy() & ~values.isin(valid).to_numpy()
        if m.any():
            unknown = pd.unique(out.loc[m, col_name])[:5].tolist()
            add(col_name, f"unknown {ref_col} (not in {ref_table}): {unknown}", m)

    # canonical dtypes for clean tables
    if not problems:
        for col in contract.columns:
            values = cols[col.name]
            if col.kind == INT and not col.nullable:
                values = values.astype("int64")
            elif col.kind == BOOL:
                values = values.astype(bool, copy=False)
            elif col.kind == STRING and _string_categories(values):
                values = plain_strings(values)
            elif col.kind == STRING and values.dtype != object:
                values = values.astype(object)
            if col.name in frame.columns and _may_share_data(values, frame[col.name]):
                values = values.copy()  # the caller keeps its frame: the output must not change with it
            cols[col.name] = values
        out = pd.DataFrame(cols, copy=False)
    if problems and raise_errors:
        raise ContractError(problems)
    return out, problems


# SKU groups become partition keys (Dagster forbids | , [ ] in them) and path segments of the output layout
# (no slashes, no '..'): a group name is 1-64 letters, digits, '_', '-', '.' or spaces, starting with a letter or
# digit.
GROUP_NAME_RULE = ("a SKU group name must be 1-64 characters: letters, digits, '_', '-', '.' or spaces, starting "
                   "with a letter or digit and without '..' (it becomes a Dagster partition key and a folder name; "
                   "'|', ',', '[', ']', '/' are not allowed)")
_GROUP_NAME = re.compile(r"^\w[\w .-]{0,63}$")


def is_valid_group_name(name: str) -> bool:
    name = str(name)
    return bool(_GROUP_NAME.match(name)) and ".." not in name and name == name.strip()


def group_name_problems(catalog: pd.DataFrame, file: str = "<memory>") -> list[Problem]:
    """One Problem naming every SKU group of the catalog that cannot be a partition key, with the rule."""
    groups = catalog["sku_group"].dropna().astype(str)
    bad = ~groups.map(is_valid_group_name).to_numpy()
    if not bad.any():
        return []
    names = sorted(set(groups[bad]))
    return [Problem("catalog", file, "sku_group", f"invalid SKU group name(s) {names}: {GROUP_NAME_RULE}",
                    int(bad.sum()), _examples(catalog, bad, ["sku_id", "sku_group"]))]


def foreign_keys(tables: Mapping[str, pd.DataFrame]) -> dict[tuple[str, str], pd.Index]:
    keys = {}
    if "catalog" in tables and "sku_id" in tables["catalog"]:
        keys[("catalog", "sku_id")] = pd.Index(tables["catalog"]["sku_id"].astype(str).unique())
    if "locations" in tables and "location_id" in tables["locations"]:
        keys[("locations", "location_id")] = pd.Index(tables["locations"]["location_id"].astype(str).unique())
    return keys


def thread_map(fn: Callable[[T], R], items: Sequence[T], threads: int = 1) -> list[R]:
    """[fn(item) for item in items], on up to `threads` threads (worth it for work that releases the GIL: the
    Parquet reader, numpy), in item order; exceptions propagate as in the loop."""
    if threads < 2 or len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def validate_tables(tables: Mapping[str, pd.DataFrame], files: Mapping[str, str] | None = None,
                    threads: int = 1) -> dict[str, pd.DataFrame]:
    """Validate a whole data set (all tables in CONTRACTS); raise one ContractError listing every problem.
    With `threads` > 1 the fact tables are validated side by side (the problems keep their order)."""
    files = files or {}
    problems: list[Problem] = []
    missing = [t for t in TABLE_NAMES if t not in tables]
    for t in missing:
        problems.append(Problem(t, files.get(t, "<missing>"), "*", "table not found"))
    clean: dict[str, pd.DataFrame] = {}
    # dimension tables first so fact tables can be checked against them
    for t in ("catalog", "locations"):
        if t in tables:
            clean[t], p = validate_table(t, tables[t], files.get(t, "<memory>"), raise_errors=False)
            problems += p
    keys = foreign_keys({t: f for t, f in clean.items()})
    facts = [t for t in TABLE_NAMES if t not in ("catalog", "locations") and t in tables]

    def validate(t: str) -> tuple[pd.DataFrame, list[Problem]]:
        return validate_table(t, tables[t], files.get(t, "<memory>"), known_keys=keys, raise_errors=False)

    for t, (frame, p) in zip(facts, thread_map(validate, facts, threads)):
        clean[t] = frame
        problems += p
    if problems:
        raise ContractError(problems)
    return clean
