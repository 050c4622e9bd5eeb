"""Parquet IO manager: one file per asset and partition under a local folder or an s3:// prefix, written atomically.

Layout (see docs/audit.md):
    <base>/<asset>/<date>/<sku_group>.parquet    date x sku_group partitions (any multi-partition: one folder per dim)
    <base>/<asset>/<partition_key>.parquet       single-dimension partitions
    <base>/<asset>.parquet                       unpartitioned
Small dict/list values are stored as `.json` at the same place.

A day is published whole: the decision assets of a partition (DAY_ASSETS) are first written under
`<base>/.runs/<run_id>/`, read from there by the rest of the run, and moved to their published place together when
the run's last decision step succeeds with its blocking checks passed. A run killed or blocked half way leaves the
previous complete day in place; `<base>/_published/<date>/<sku_group>.json` names the run behind each file.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Optional, Sequence

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr

from ..core.files import TMP_PREFIX, atomic_write_local  # noqa: F401  (TMP_PREFIX: part of the layout docs)
from ..core import storage
from ..core.paths import check_segment
from ..core.storage import is_s3

PARQUET, JSON = ".parquet", ".json"
# the decisions of one day, in pipeline order: published together, never mixed across runs
DAY_ASSETS = ("demand_forecast", "price_recommendations", "transfer_plan")
STAGING, PUBLISHED, SUPERSEDED = ".runs", "_published", ".superseded"
# Output metadata an asset sets to False when one of its blocking checks failed: nothing of the run is published
BLOCKING_CHECKS_PASSED = "blocking_checks_passed"


def partition_segments(partition_key: Any, partitions_def: Optional[dg.PartitionsDefinition] = None) -> list[str]:
    """Path segments of a partition key: ['2026-03-01', 'grocery'] for a date x sku_group key, [key] otherwise.

    Accepts a MultiPartitionKey, a mapping {dimension: key}, a `a|b` string (multi-partition keys print their
    dimension values joined by '|', dimensions sorted by name, so `date` comes before `sku_group`) or a plain key.
    """
    if partition_key is None:
        return []
    if isinstance(partition_key, dg.MultiPartitionKey):
        dims = partition_key.keys_by_dimension
        values = [dims[d] for d in sorted(dims)]
    elif isinstance(partition_key, Mapping):
        values = [partition_key[d] for d in sorted(partition_key)]
    elif isinstance(partitions_def, dg.MultiPartitionsDefinition) or (
            partitions_def is None and "|" in str(partition_key)):
        values = str(partition_key).split("|")
    else:
        values = [str(partition_key)]
    return [check_segment(v, "partition key part") for v in values]


def _asset_segments(asset: Any) -> list[str]:
    if isinstance(asset, dg.AssetKey):
        parts = list(asset.path)
    elif isinstance(asset, (list, tuple)):
        parts = list(asset)
    else:
        parts = str(asset).split("/")
    return [check_segment(p, "asset name") for p in parts]


def asset_path(base: str, asset: Any, partition_key: Any = None, ext: str = PARQUET,
               partitions_def: Optional[dg.PartitionsDefinition] = None) -> str:
    """Where the IO manager stores `asset` for `partition_key` under `base` (local path or s3:// URI).

    >>> asset_path("s3://b/out", "price_recommendations", "2026-03-01|grocery")
    's3://b/out/price_recommendations/2026-03-01/grocery.parquet'
    """
    segments = _asset_segments(asset)
    parts = partition_segments(partition_key, partitions_def)
    if parts:
        segments = segments + parts[:-1] + [parts[-1] + ext]
    else:
        segments[-1] = segments[-1] + ext
    if is_s3(base):
        return base.rstrip("/") + "/" + "/".join(segments)
    return os.path.join(base, *segments)


_NOT_STR = object()


def _plain_layout(frame: pd.DataFrame) -> bool:
    """A default RangeIndex and distinct str column names: what Parquet gives back without an index."""
    index = frame.index
    return (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1 and index.name is None
            and all(isinstance(c, str) for c in frame.columns) and not frame.columns.has_duplicates)


def _plain_dtype(dtype) -> bool:
    return dtype in ("float64", "int64", "bool") or str(dtype) == "datetime64[ns]"


def _str_column(values):
    """For an object column: `ids.distinct_objects(values)` when every value is a str ((codes, distinct objects),
    or None for a small or mostly-distinct column); `_NOT_STR` when some value is not a str."""
    from ..core.ids import distinct_objects

    split = distinct_objects(values)
    if split is not None:
        return split if all(isinstance(o, str) for o in split[1]) else _NOT_STR
    if len(values) and pd.api.types.infer_dtype(values, skipna=False) != "string":
        return _NOT_STR
    return None


def _plain_arrow_table(frame: pd.DataFrame):
    """The frame as an Arrow table with its id columns dictionary-encoded, or None when it is not plain.

    Plain (what `_WrittenFrames` keeps): a default RangeIndex, distinct str column names,
    float64/int64/bool/datetime64[ns] columns and object columns holding str only. An object column that repeats a
    few str objects (sku_id, location_id...) becomes a dictionary array built from its distinct objects
    (core.ids), which skips converting millions of Python strings one by one. The table carries pandas' own
    metadata for the frame and is written without the Arrow schema, so the Parquet file holds plain string
    columns and reads back exactly as `to_parquet`'s would."""
    import numpy as np
    import pyarrow as pa

    if not _plain_layout(frame):
        return None
    arrays = []
    for j, dtype in enumerate(frame.dtypes):
        values = frame.iloc[:, j].to_numpy()
        if dtype == object:
            split = _str_column(values)
            if split is _NOT_STR:
                return None
            if split is None:
                arrays.append(pa.array(values, pa.string()))
            else:
                codes, objects = split
                arrays.append(pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                                             pa.array(objects, pa.string())))
        elif _plain_dtype(dtype):
            arrays.append(pa.array(values))
        else:
            return None
    metadata = pa.Table.from_pandas(frame.iloc[:0], preserve_index=False).schema.metadata
    return pa.table(arrays, names=list(frame.columns)).replace_schema_metadata(metadata)


def _frame_parquet(frame: pd.DataFrame) -> tuple[bytes, bool]:
    """(Parquet bytes of `frame`, whether it is plain: read back from those bytes it is the same frame)."""
    buf = io.BytesIO()
    table = _plain_arrow_table(frame)
    if table is None:
        frame.to_parquet(buf, index=False)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, buf, store_schema=False)
    return buf.getvalue(), table is not None


def _encode(obj: Any) -> tuple[bytes, str, Optional[int]]:
    """(bytes, extension, rows) for a value the manager can store."""
    if isinstance(obj, pd.DataFrame):
        return _frame_parquet(obj)[0], PARQUET, len(obj)
    if isinstance(obj, (dict, list)):
        try:
            data = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"ParquetIOManager cannot store this {type(obj).__name__} as JSON: {exc}") from exc
        return data, JSON, len(obj)
    raise TypeError(
        f"ParquetIOManager stores pandas DataFrames (as Parquet) and dict/list values (as JSON); got "
        f"{type(obj).__name__}. Return a DataFrame, or give this asset another io_manager_key.")


def read_only(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the arrays of its numpy-backed columns marked read-only (in place; returned for chaining).

    Every DataFrame a step loads is read-only, whether it was decoded from the file or served from this process's
    memory, so a step that wrote into its input's values would fail the same loud way in every run instead of
    changing, in one run only, the copy other steps are served. Adding, replacing or dropping columns of an input
    is fine (that builds a new frame); a step that wants to edit values copies its input first.

    A step may hand an output over the same way: the manager keeps a frame whose arrays are all read-only as it is,
    without the copy it keeps of any other (its producer writes into it no more, nor into any array it views)."""
    for array in _block_arrays(frame):
        if array is not None:
            array.flags.writeable = False
    return frame


def _block_arrays(frame: pd.DataFrame) -> list:
    """The numpy arrays holding the frame's columns; None for a column held otherwise (an extension array)."""
    arrays = []
    for block in frame._mgr.blocks:
        values = block.values  # a numpy array, or an extension array wrapping one (datetime64[ns])
        arrays.append(values if isinstance(values, np.ndarray) else getattr(values, "_ndarray", None))
    return arrays


def _handed_over(frame: pd.DataFrame) -> bool:
    """Whether every array of the frame is read-only (`read_only`)."""
    return all(isinstance(a, np.ndarray) and not a.flags.writeable for a in _block_arrays(frame))


class _WrittenFrames:
    """Frames this process wrote to local files, kept so the run's later steps skip decoding them again.

    A value is served only while its file is the one written (same inode, size and mtime: a rerun or another
    process that replaced it makes the entry stale), and only frames that come back from Parquet unchanged are
    kept (default index, str column names, float/int/bool/datetime columns and object columns holding str only),
    so a step receives exactly what reading the file would give. The kept copy's arrays are read-only and each load
    gets a shallow copy of it: a step may add, replace or drop columns of its input freely, and one that wrote into
    its input's values in place would fail loudly instead of changing another step's input (no step does; the
    tests run every step on cache hits). So a step's inputs cost no second copy of the data. Bounded by
    `budget_bytes`, oldest dropped first.
    """

    def __init__(self) -> None:
        import collections
        import threading

        self._frames: "collections.OrderedDict[str, tuple[tuple, pd.DataFrame, int]]" = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _token(path: str) -> Optional[tuple]:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    @staticmethod
    def may_keep(frame: pd.DataFrame, budget_bytes: int) -> bool:
        """Whether `frame` can be kept by its layout and size (its str columns are checked when it is encoded)."""
        return budget_bytes > 0 and _plain_layout(frame) and \
            all(dtype == object or _plain_dtype(dtype) for dtype in frame.dtypes) and \
            int(frame.memory_usage(index=False, deep=False).sum()) <= budget_bytes

    @staticmethod
    def copy_to_keep(frame: pd.DataFrame) -> pd.DataFrame:
        """The copy of `frame` to keep: its own data, read-only; the frame's own data when it was handed over
        read-only (`read_only`)."""
        return frame.copy(deep=False) if _handed_over(frame) else read_only(frame.copy(deep=True))

    def put(self, path: str, kept: pd.DataFrame, budget_bytes: int) -> None:
        """Keep `kept` (a `copy_to_keep` of a local frame that round-trips and `may_keep` allowed) as the value of the
        file just written."""
        token = self._token(path)
        if token is None:
            return
        size = int(kept.memory_usage(index=False, deep=False).sum())
        with self._lock:
            self._frames.pop(path, None)
            self._frames[path] = (token, kept, size)
            while sum(v[2] for v in self._frames.values()) > budget_bytes:
                self._frames.popitem(last=False)

    def get(self, path: str) -> Optional[pd.DataFrame]:
        with self._lock:
            entry = self._frames.get(path)
        if entry is None:
            return None
        if self._token(path) != entry[0]:
            with self._lock:
                self._frames.pop(path, None)
            return None
        return entry[1].copy(deep=False)

    def moved(self, src: str, dst: str) -> None:
        with self._lock:
            entry = self._frames.pop(src, None)
            if entry is not None:
                self._frames[dst] = entry  # a rename keeps inode, size and mtime


_WRITTEN = _WrittenFrames()


def _decode(data: bytes, ext: str) -> Any:
    if ext == PARQUET:
        return read_only(pd.read_parquet(io.BytesIO(data)))
    return json.loads(data.decode("utf-8"))


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrames as Parquet (dict/list as JSON), one file per asset and partition, locally or on S3."""

    base_path: str = Field(default="out", description="local folder, or s3://bucket/prefix, holding asset values")
    endpoint_url: Optional[str] = Field(
        default=None, description="S3 endpoint (moto/MinIO) used when base_path is s3://; None = AWS_ENDPOINT_URL_S3 "
                                  "or the AWS default")
    region_name: Optional[str] = Field(default=None, description="S3 region; None = AWS_DEFAULT_REGION or us-east-1")

    sse: Optional[str] = Field(default="AES256", description="S3 server-side encryption header of every object "
                                                             "written (as the audit sink): AES256, aws:kms or None")

    memory_cache_mb: int = Field(
        default=1024, description="frames written by this process (local files) are kept up to this many MB so the "
                                  "run's later steps skip decoding them again; 0 = always read the file")

    _client: Any = PrivateAttr(default=None)

    # ---- storage primitives (core/storage.py) --------------------------------------------------------------
    def _s3_client(self) -> Any:
        # Created on first S3 use, never at import or config time, so the same definitions load without AWS.
        if self._client is None and (self.endpoint_url or self.region_name):
            self._client = storage.make_s3_client(self.endpoint_url, self.region_name)
        return self._client if self._client is not None else storage.s3_client()

    def _client_for(self, path: str) -> Any:
        return self._s3_client() if is_s3(path) else None

    def _write(self, path: str, data: bytes) -> None:
        # a single PUT is atomic on S3; locally a temp file renamed over the target
        storage.write_bytes(path, data, self._client_for(path), extra_args=self._sse())

    def _move(self, src: str, dst: str) -> None:
        storage.move(src, dst, self._client_for(src), extra_args=self._sse())
        _WRITTEN.moved(src, dst)

    def _encode_keeping(self, obj: Any) -> tuple[bytes, str, Optional[int], Optional[pd.DataFrame]]:
        """`_encode(obj)` and, for a frame this process keeps (_WrittenFrames), the copy to keep: made while the
        Parquet writer encodes the frame in another thread (both release the GIL) when the run has two cores."""
        from ..core.loading import run_threads

        budget = self.memory_cache_mb * 2 ** 20
        if not isinstance(obj, pd.DataFrame) or is_s3(self.base_path) or not _WRITTEN.may_keep(obj, budget):
            return (*_encode(obj), None)
        if run_threads() > 1:
            with ThreadPoolExecutor(1) as pool:
                encoded = pool.submit(_frame_parquet, obj)
                kept = _WRITTEN.copy_to_keep(obj)
                data, plain = encoded.result()
        else:
            data, plain = _frame_parquet(obj)
            kept = _WRITTEN.copy_to_keep(obj) if plain else None
        return data, PARQUET, len(obj), kept if plain else None

    def _remember(self, path: str, kept: Optional[pd.DataFrame]) -> None:
        if kept is not None:
            _WRITTEN.put(path, kept, self.memory_cache_mb * 2 ** 20)

    def _exists(self, path: str) -> bool:
        return storage.exists(path, self._client_for(path))

    def _sse(self) -> dict:
        return {"ServerSideEncryption": self.sse} if self.sse else {}

    def _read(self, path: str) -> Optional[bytes]:
        """Bytes at `path`, or None when there is no such file/object."""
        return storage.read_bytes(path, self._client_for(path))

    # ---- Dagster hooks -------------------------------------------------------------------------------------
    @staticmethod
    def _asset(context) -> list[str]:
        if context.has_asset_key:
            return list(context.asset_key.path)
        # op outputs outside assets: step and output name
        return [context.step_key, context.name]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            context.log.debug("ParquetIOManager: output is None, nothing stored")
            return
        partition_key = None
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            if len(keys) != 1:
                raise ValueError(
                    f"{'/'.join(self._asset(context))}: this run covers {len(keys)} partitions "
                    f"({keys[0]} .. {keys[-1]}) but stores one value; run one partition per run "
                    "(a multi-run backfill), which is how this project's assets are defined")
            partition_key = keys[0]
        data, ext, rows, kept = self._encode_keeping(obj)
        asset = self._asset(context)
        partitions_def = context.asset_partitions_def if context.has_asset_partitions else None
        path = asset_path(self.base_path, asset, partition_key, ext, partitions_def)
        metadata: dict[str, Any] = {"path": dg.MetadataValue.path(path), "bytes": len(data)}
        run_id, plan = _run_and_plan(context)
        if asset[-1] in DAY_ASSETS and partition_key is not None and run_id is not None:
            staged = self._staged(run_id, asset, partition_key, ext, partitions_def)
            self._write(staged, data)
            self._remember(staged, kept)
            passed = context.output_metadata.get(BLOCKING_CHECKS_PASSED, True)
            passed = getattr(passed, "value", passed)
            later = DAY_ASSETS[DAY_ASSETS.index(asset[-1]) + 1:]
            last_of_run = plan is None or not any(step in plan for step in later)
            if passed and last_of_run:
                published = self.publish_day(run_id, partition_key, partitions_def)
                metadata["published_with"] = dg.MetadataValue.text(", ".join(published))
            else:
                metadata["published_with"] = dg.MetadataValue.text(
                    "not yet: published when the run's last decision step succeeds" if passed else
                    "not published: a blocking check failed; the previous complete day stays in place")
        else:
            self._write(path, data)
            self._remember(path, kept)
        if rows is not None:
            metadata["rows"] = rows
        context.add_output_metadata(metadata)

    # ---- one day, published whole ------------------------------------------------------------------------
    def _staged(self, run_id: str, asset: Sequence[str], partition_key: Any, ext: str, partitions_def) -> str:
        base = (self.base_path.rstrip("/") + "/" + STAGING + "/" + check_segment(run_id, "run id")) \
            if is_s3(self.base_path) else os.path.join(self.base_path, STAGING, check_segment(run_id, "run id"))
        return asset_path(base, asset, partition_key, ext, partitions_def)

    def _manifest_path(self, partition_key: Any, partitions_def) -> str:
        return asset_path(self.base_path, PUBLISHED, partition_key, JSON, partitions_def)

    def published_runs(self, partition_key: Any, partitions_def=None) -> dict[str, str]:
        """{decision asset: run id} of the published day (empty when nothing was published yet)."""
        data = self._read(self._manifest_path(partition_key, partitions_def))
        return json.loads(data.decode("utf-8")).get("assets", {}) if data else {}

    def publish_day(self, run_id: str, partition_key: Any, partitions_def=None) -> list[str]:
        """Move the run's staged decision files of the partition to their published place, and retire published
        decisions downstream of them that the run did not redo (they were made from what it replaced). Returns the
        assets published. The manifest, written last, names the run behind each published file."""
        runs = self.published_runs(partition_key, partitions_def)
        moved: list[str] = []
        for name in DAY_ASSETS:
            staged = self._staged(run_id, [name], partition_key, PARQUET, partitions_def)
            target = asset_path(self.base_path, [name], partition_key, PARQUET, partitions_def)
            if self._exists(staged):
                self._move(staged, target)
                moved.append(name)
                runs[name] = run_id
            elif moved and self._exists(target):
                # made from an upstream decision this run replaced: kept aside, not beside the new day
                aside = asset_path("/".join([self.base_path.rstrip("/"), SUPERSEDED, runs.get(name, "unknown")])
                                   if is_s3(self.base_path) else
                                   os.path.join(self.base_path, SUPERSEDED, runs.get(name, "unknown")),
                                   [name], partition_key, PARQUET, partitions_def)
                self._move(target, aside)
                runs.pop(name, None)
        if moved:
            self._write(self._manifest_path(partition_key, partitions_def),
                        json.dumps({"run_id": run_id, "assets": runs}, sort_keys=True).encode("utf-8"))
        return moved

    def _load_one(self, asset: Sequence[str], partition_key: Any, partitions_def,
                  run_id: Optional[str] = None) -> Any:
        if run_id is not None and asset[-1] in DAY_ASSETS and partition_key is not None:
            staged = self._staged(run_id, asset, partition_key, PARQUET, partitions_def)
            frame = _WRITTEN.get(staged)
            if frame is not None:
                return frame
            data = self._read(staged)
            if data is not None:  # this run's own, not yet published, decision
                return _decode(data, PARQUET)
        tried = []
        for ext in (PARQUET, JSON):
            path = asset_path(self.base_path, asset, partition_key, ext, partitions_def)
            frame = _WRITTEN.get(path) if ext == PARQUET else None
            if frame is not None:  # written by this process moments ago: the same frame, not decoded again
                return frame
            data = self._read(path)
            if data is not None:
                return _decode(data, ext)
            tried.append(path)
        raise FileNotFoundError(
            f"no stored value for asset {'/'.join(asset)}"
            + (f" partition {partition_key}" if partition_key is not None else "")
            + f": looked for {' and '.join(tried)}. Materialize it first (same base_path: {self.base_path}).")

    def load_stored(self, asset: str, partition_key: Any = None) -> Any:
        """A stored value outside Dagster's input mechanism (e.g. earlier partitions), or None when absent."""
        try:
            return self._load_one(_asset_segments(asset), partition_key, None)
        except FileNotFoundError:
            return None

    def load_input(self, context: dg.InputContext) -> Any:
        asset = self._asset(context.upstream_output) if not context.has_asset_key else list(context.asset_key.path)
        if not context.has_asset_partitions:
            return self._load_one(asset, None, None)
        partitions_def = context.asset_partitions_def
        keys = list(context.asset_partition_keys)
        if len(keys) == 1:
            return self._load_one(asset, keys[0], partitions_def, _run_and_plan(context)[0])
        # A range of upstream partitions (e.g. an unpartitioned consumer): load each, tag rows with their key.
        frames = []
        for key in keys:
            value = self._load_one(asset, key, partitions_def)
            if not isinstance(value, pd.DataFrame):
                raise TypeError(f"{'/'.join(asset)}: cannot combine {len(keys)} partitions of non-DataFrame values")
            frames.append(value.assign(**partition_columns(key, partitions_def)))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _run_and_plan(context) -> tuple[Optional[str], Optional[set[str]]]:
    """(run id, step keys the run executes) from a Dagster context; (None, None) outside a run (built contexts)."""
    try:
        step_context = context.step_context
    except Exception:  # contexts built in unit tests carry no step context
        return None, None
    if step_context is None:
        return None, None
    # the run's steps, not the step's own plan: under the multiprocess executor each child process holds a plan
    # of its one step
    plan = None
    try:
        plan = step_context.dagster_run.step_keys_to_execute
        if plan is None:
            plan = [key.path[-1] for key in step_context.job_def.asset_layer.selected_asset_keys]
    except Exception:
        try:
            plan = step_context.execution_plan.step_keys_to_execute
        except Exception:
            plan = None
    return step_context.run_id, (set(plan) if plan is not None else None)


def partition_columns(partition_key: Any, partitions_def: Optional[dg.PartitionsDefinition] = None) -> dict[str, str]:
    """Columns added to rows loaded from several partitions: `partition_<dimension>` or `partition`."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        return {f"partition_{d}": v for d, v in partition_key.keys_by_dimension.items()}
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        names = sorted(d.name for d in partitions_def.partitions_defs)
        return {f"partition_{d}": v for d, v in zip(names, str(partition_key).split("|"))}
    return {"partition": str(partition_key)}


__all__ = ["ParquetIOManager", "DAY_ASSETS", "BLOCKING_CHECKS_PASSED", "asset_path", "atomic_write_local",
           "partition_segments", "partition_columns"]
