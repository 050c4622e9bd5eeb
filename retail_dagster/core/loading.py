"""Reading and writing a folder of input tables (CSV or Parquet), locally or on S3, validated on the way in."""

from __future__ import annotations

import bisect
import io
import os
from typing import Any, Mapping, Optional

import pandas as pd

from . import storage
from .contracts import TABLE_NAMES, ContractError, Problem, thread_map, validate_tables
from .storage import is_s3


def _read_bytes(data: bytes, name: str) -> pd.DataFrame:
    if name.endswith(".parquet"):
        return pd.read_parquet(io.BytesIO(data))
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=True)


def find_table_files(path: str, s3_client: Any = None) -> dict[str, str]:
    """Map table name -> file (Parquet preferred over CSV) in a local folder or an s3:// prefix."""
    return _table_files(_file_names(path, s3_client))


def _table_files(names: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for t in TABLE_NAMES:
        for ext in (".parquet", ".csv"):
            if t + ext in names:
                found[t] = names[t + ext]
                break
    return found


def duplicate_table_problems(names: dict[str, str]) -> list[Problem]:
    """A table present twice (catalog.parquet and catalog.csv): which one is meant is not ours to guess."""
    return [Problem(t, names[t + ".parquet"], "*",
                    f"two copies of the table: {t}.parquet and {t}.csv; keep one (they may differ, and only the "
                    "Parquet file would be read)")
            for t in TABLE_NAMES if t + ".parquet" in names and t + ".csv" in names]


def _file_names(path: str, s3_client: Any = None) -> dict[str, str]:
    """{file name: full path} of the files directly under a local folder or an s3:// prefix."""
    if not is_s3(path) and not os.path.isdir(path):
        raise FileNotFoundError(f"data folder not found: {path}")
    return {name: storage.join(path, name) for name in storage.list_names(path, s3_client)}


# fact tables keyed by SKU: a SKU-group slice reads only its SKUs' rows (Parquet row groups are pruned)
SKU_KEYED = ("sales", "inventory", "promotions")


DATED = ("sales", "inventory", "traffic", "weather", "events")


def _string_ids(schema, name: str) -> bool:
    """Whether column `name` of an Arrow schema holds text, plain or dictionary-encoded."""
    import pyarrow as pa

    if name not in schema.names:
        return False
    kind = schema.field(name).type
    kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _arrow_filter(schema, skus: Optional[list[str]], since, until):
    """The pyarrow expression keeping `skus` and dates in [since, until), or None when the file's columns cannot
    take it (no such column, or dates stored as text: then rows are filtered after reading)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    names = set(schema.names)
    expr = None

    def both(a, b):
        return b if a is None else a & b

    if skus is not None:
        if not _string_ids(schema, "sku_id"):
            return None
        expr = pads.field("sku_id").isin(pa.array(list(skus), type=pa.string()))
    if since is not None or until is not None:
        if "date" not in names or not pa.types.is_timestamp(schema.field("date").type) \
                or schema.field("date").type.tz is not None:
            return None
        date_type = schema.field("date").type
        if since is not None:
            expr = both(expr, pads.field("date") >= pa.scalar(pd.Timestamp(since).to_pydatetime(), type=date_type))
        if until is not None:
            expr = both(expr, pads.field("date") < pa.scalar(pd.Timestamp(until).to_pydatetime(), type=date_type))
    return expr


def _env_threads(name: str) -> int | None:
    """A thread count from environment variable `name`: None when unset or empty, 1 when not a number."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        return 1


def run_threads(default: int | None = None) -> int:
    """The run's share of the machine's cores: OMP_NUM_THREADS when set, else `default` (None: every core).

    Runs sharing a machine set OMP_NUM_THREADS to cores / concurrent runs (as pipeline_bench's parallel pass and
    the pilot's arms do) so that the Parquet reader, BLAS and LightGBM together never oversubscribe the cores."""
    return _env_threads("OMP_NUM_THREADS") or (default if default is not None else (os.cpu_count() or 1))


def reader_threads() -> int:
    """Threads the Parquet reader may use: the run's share of the cores (run_threads);
    RETAIL_DAGSTER_READER_THREADS overrides it."""
    return _env_threads("RETAIL_DAGSTER_READER_THREADS") or run_threads()


def _row_groups_holding(pf, skus: list[str]) -> Optional[dict[int, bool]]:
    """{row group: whether every row of it is one of `skus`} for the row groups of ParquetFile `pf` that may hold
    rows of `skus`, or None when none can be ruled out.

    Only an optimization: the reader still filters the rows of the row groups it reads (but for the SKU test on
    a row group known to hold only wanted SKUs), so a file in any order reads the same rows. A row group is ruled
    out when
    - its sku_id min/max statistics hold none of `skus` (pyarrow's own filter prunes by statistics only for plain
      string columns, never for dictionary ones);
    - or, for a dictionary column, its dictionary holds none of `skus`: one decode of the sku_id column, tens of
      milliseconds for millions of rows. Files clustered by SKU group (the demo writes them so) are read only in
      their group's row groups even though the demo's SKU ids interleave the groups, which min/max cannot tell.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    meta = pf.metadata
    if meta.num_row_groups <= 1:
        return None
    col = next((i for i in range(meta.num_columns) if meta.schema.column(i).path == "sku_id"), None)
    if col is None:
        return None
    wanted = sorted(set(skus))  # Python orders str by code point: the byte order of UTF-8 statistics
    keep: dict[int, bool] = {}
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(col).statistics
        if stats is not None and stats.has_min_max and isinstance(stats.min, str) and isinstance(stats.max, str):
            pos = bisect.bisect_left(wanted, stats.min)
            if pos == len(wanted) or wanted[pos] > stats.max:
                continue
        keep[i] = False
    if len(keep) > 1 and pa.types.is_dictionary(pf.schema_arrow.field("sku_id").type):
        value_set = pa.array(wanted, type=pa.string())
        for i in list(keep):
            chunks = pf.read_row_group(i, columns=["sku_id"]).column(0).chunks
            # a dictionary may hold values no row uses: "none wanted" is exact, "all wanted" needs no missing id
            hits = [pc.is_in(c.dictionary.cast(pa.string()), value_set=value_set) for c in chunks]
            if not any(pc.any(h).as_py() for h in hits):
                del keep[i]
            else:
                keep[i] = all(pc.all(h).as_py() is True and c.null_count == 0 for h, c in zip(hits, chunks))
    return keep if len(keep) < meta.num_row_groups else None


def _read_parquet(open_source, columns: Optional[list[str]], skus, since, until) -> tuple[pd.DataFrame, bool]:
    """(frame, whether the row filters were applied by the reader). Only the wanted columns and, with `skus`,
    the row groups that may hold their rows (_row_groups_holding) are decoded; dictionary-encoded ids come back
    categorical (the contract validation turns them into plain strings by one take over their categories)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetFile(open_source()) as pf:
        schema = pf.schema_arrow
        if columns:
            columns = [c for c in columns if c in schema.names]
        expr = _arrow_filter(schema, skus, since, until)
        wanted = expr is not None or (skus is None and since is None and until is None)
        threads = reader_threads() > 1
        filtered_by = {"sku_id"} | ({"date"} if since is not None or until is not None else set())
        row_groups = None
        if skus is not None and _string_ids(schema, "sku_id") and (not columns or filtered_by <= set(columns)):
            row_groups = _row_groups_holding(pf, skus)
        if row_groups is None:
            table = pq.read_table(open_source(), columns=columns, filters=expr, use_threads=threads)
        elif not row_groups:
            table = pf.read_row_groups([], columns=columns)
        else:  # one row group at a time, filtered as read: never more than one unfiltered row group in memory
            dates_only = _arrow_filter(schema, None, since, until)
            parts = []
            for i, only_wanted in row_groups.items():
                part = pf.read_row_group(i, columns=columns, use_threads=threads)
                keep = None if expr is None else dates_only if only_wanted else expr
                parts.append(part.filter(keep) if keep is not None else part)
            table = pa.concat_tables(parts)
    frame = table.to_pandas(use_threads=threads, split_blocks=True, self_destruct=True)
    return frame, wanted


def read_raw_table(file: str, s3_client: Any = None, skus: Optional[list[str]] = None,
                   columns: Optional[list[str]] = None, since: Optional[pd.Timestamp] = None,
                   until: Optional[pd.Timestamp] = None) -> pd.DataFrame:
    """One table file as read (no validation); `skus` keeps only those SKUs' rows, `since`/`until` only rows dated
    in [since, until). Parquet is read with those filters pushed into the reader (row groups pruned by their
    statistics, only `columns` decoded), locally or from S3; CSV is filtered after reading. Rows whose date does
    not parse are kept, for validation to name them."""
    if file.endswith(".parquet"):
        data = None
        if is_s3(file):
            data = storage.read_bytes(file, s3_client)
            if data is None:
                raise FileNotFoundError(file)

        def open_source():
            import pyarrow as pa

            return pa.BufferReader(data) if data is not None else file
        frame, applied = _read_parquet(open_source, columns, skus, since, until)
        if applied:
            skus = since = until = None
    elif is_s3(file):
        frame = _read_bytes(storage.read_bytes(file, s3_client), file)
        if columns:
            frame = frame[[c for c in columns if c in frame.columns]]
    else:
        frame = pd.read_csv(file, dtype=str, keep_default_na=True,
                            usecols=(lambda c: c in columns) if columns else None)
    if skus is not None and "sku_id" in frame.columns:
        frame = frame[frame["sku_id"].astype(str).isin(set(skus)).to_numpy()]
    if (since is not None or until is not None) and "date" in frame.columns:
        dates = pd.to_datetime(frame["date"], errors="coerce", format="mixed") if frame["date"].dtype == object \
            else pd.to_datetime(frame["date"], errors="coerce")
        if getattr(dates.dt, "tz", None) is not None:
            dates = dates.dt.tz_localize(None)
        keep = dates.isna()  # unparseable dates stay for validation to report
        if since is not None:
            keep |= dates >= pd.Timestamp(since)
        if until is not None:
            keep &= dates.isna() | (dates < pd.Timestamp(until))
        frame = frame[keep.to_numpy()]
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        frame = frame.reset_index(drop=True)
    return frame


def read_groups(path: str, s3_client: Any = None) -> list[str]:
    """The distinct SKU groups of the catalog under `path`, reading only its `sku_group` column (no fact table):
    what loading the code location needs to build the partitions."""
    files = find_table_files(path, s3_client)
    if "catalog" not in files:
        raise ContractError([Problem("catalog", storage.join(path, "catalog.parquet|.csv"), "*",
                                     "table file not found")])
    groups = read_raw_table(files["catalog"], s3_client, columns=["sku_group"])
    if "sku_group" not in groups.columns:
        raise ContractError([Problem("catalog", files["catalog"], "sku_group", "required column is missing")])
    return sorted(groups["sku_group"].dropna().astype(str).unique().tolist())


def first_sales_date(path: str, s3_client: Any = None) -> Optional[pd.Timestamp]:
    """The first sales date under `path`, from the Parquet footer's statistics when it has them (no rows read),
    else from the `date` column alone."""
    files = find_table_files(path, s3_client)
    if "sales" not in files:
        return None
    file = files["sales"]
    if file.endswith(".parquet") and not is_s3(file):
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(file).metadata
        try:
            idx = meta.schema.to_arrow_schema().get_field_index("date")
            stats = [meta.row_group(i).column(idx).statistics for i in range(meta.num_row_groups)]
            if idx >= 0 and stats and all(s is not None and s.has_min_max for s in stats):
                return pd.Timestamp(min(s.min for s in stats)).tz_localize(None).normalize()
        except Exception:  # statistics of another type (text dates): read the column below
            pass
    dates = read_raw_table(file, s3_client, columns=["date"])["date"]
    dates = pd.to_datetime(dates, errors="coerce", format="mixed") if dates.dtype == object else \
        pd.to_datetime(dates, errors="coerce")
    return None if dates.isna().all() else pd.Timestamp(dates.min()).tz_localize(None).normalize()


def load_tables(path: str, s3_client: Any = None, tables: tuple[str, ...] = TABLE_NAMES,
                sku_group: Optional[str] = None, since: Optional[pd.Timestamp] = None,
                until: Optional[pd.Timestamp] = None) -> dict[str, pd.DataFrame]:
    """Read and validate every input table under `path`. Raises ContractError listing every problem.

    With `sku_group`, the SKU-keyed fact tables hold only that group's SKUs (the catalog stays whole): what one
    partition needs, read without loading the other groups. With `since`, dated tables start on that day; with
    `until`, they end the day before it (a partition never reads rows it may not use).
    """
    names = _file_names(path, s3_client)
    files = _table_files(names)
    raw: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = duplicate_table_problems(names)
    if problems:
        raise ContractError(problems)
    skus = None
    if sku_group is not None and "catalog" in files:
        raw["catalog"] = catalog = read_raw_table(files["catalog"], s3_client)
        if "sku_group" in catalog.columns and "sku_id" in catalog.columns:
            skus = catalog.loc[(catalog["sku_group"].astype(str) == sku_group).to_numpy(), "sku_id"]
            skus = skus.astype(str).tolist()
            if not skus:
                raise ContractError([Problem("catalog", files["catalog"], "sku_group",
                                             f"no SKU in group '{sku_group}'")])

    def read(t: str) -> pd.DataFrame | Problem:
        try:
            return read_raw_table(files[t], s3_client, skus=skus if t in SKU_KEYED else None,
                                  since=since if t in DATED else None, until=until if t in DATED else None)
        except Exception as exc:  # unreadable file: report, do not crash with a bare parser error
            return Problem(t, files[t], "*", f"cannot read file: {type(exc).__name__}: {exc}")

    threads = run_threads()
    read_now = [t for t in tables if t in files and t not in raw]
    # side by side on the run's cores: the Parquet reader and numpy release the GIL
    for t, table in zip(read_now, thread_map(read, read_now, threads)):
        raw[t] = table
    for t in tables:
        if t not in files:
            problems.append(Problem(t, os.path.join(str(path), f"{t}.parquet|.csv"), "*", "table file not found"))
        elif isinstance(raw[t], Problem):
            problems.append(raw[t])
    if problems:
        raise ContractError(problems)
    clean = validate_tables({t: raw[t] for t in tables if t in raw}, files, threads=threads)
    if skus is not None:
        from .asof import GROUP_ATTR

        for t in SKU_KEYED:
            if t in clean:  # planning_inputs then skips its own SKU filter on these
                clean[t].attrs[GROUP_ATTR] = sku_group
    return clean


def write_tables(tables: Mapping[str, pd.DataFrame], path: str, s3_client: Any = None) -> list[str]:
    """Write tables as Parquet files `<path>/<table>.parquet` (local folder or s3:// prefix)."""
    written = []
    for name, frame in tables.items():
        target = storage.join(path, f"{name}.parquet")
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        storage.write_bytes(target, buf.getvalue(), s3_client)
        written.append(target)
    return written


__all__ = ["run_threads", "load_tables", "write_tables", "find_table_files", "read_raw_table", "read_groups",
           "first_sales_date", "ContractError"]
