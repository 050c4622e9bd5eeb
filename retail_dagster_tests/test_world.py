"""The pilot's world: stock is conserved, sales never exceed stock, prices act through the true elasticity, the
noise is common to every arm, and the tables it hands the agents hold no truth."""

import numpy as np
import pandas as pd
import pytest

from retail_dagster.core.contracts import CONTRACTS
from retail_dagster.core.demo import generate_demo
from retail_dagster.core.world import World, WorldSettings, summarize_kpis

START = pd.Timestamp("2026-06-01")
DAYS = 10


@pytest.fixture(scope="module")
def demo():
    return generate_demo(n_skus=30, n_stores=3, n_warehouses=1, n_days=150, seed=11,
                         end_date=(START - pd.Timedelta(days=1)).strftime("%Y-%m-%d"), horizon_days=DAYS + 14)


def _world(demo, seed=11, **kw):
    return World(demo, START, DAYS, WorldSettings(seed=seed, **kw))


def _some_transfers(world: World) -> pd.DataFrame:
    """Store-to-store and warehouse-to-store transfers on real lanes, some larger than the sender holds."""
    lanes = world.lanes.head(6)
    rows = []
    for i, lane in enumerate(lanes.itertuples()):
        rows.append({"sku_id": world.sku_ids[i % world.S], "from_location": lane.from_location,
                     "to_location": lane.to_location, "units": 5.0 if i % 2 else 10_000.0})
    return pd.DataFrame(rows)


def test_stock_is_conserved_and_never_oversold(demo):
    world = _world(demo)
    for day in range(DAYS):
        world.step(transfers=_some_transfers(world) if day % 3 == 0 else None)
        f = world.last_flows
        end = f["start"] + f["receipts"] + f["transfer_in"] - f["transfer_out"] - f["sold"] - f["delivered"]
        np.testing.assert_allclose(end, f["end"], atol=1e-9)
        assert (f["end"] >= -1e-9).all()
        n = world.N
        assert (f["sold"][:n] <= f["available_for_sale"] + 1e-9).all()
        assert (f["sold"][:n] <= f["demand"] + 1e-9).all()
    # the observed inventory is the world's end-of-day stock
    inv = world.observed_tables()["inventory"]
    last = inv[inv["date"] == inv["date"].max()]
    assert len(last) == world.N + world.NW
    assert np.isclose(last["on_hand"].sum(), world.on_hand.sum())


def test_transfers_beyond_the_senders_stock_are_cut_and_counted(demo):
    world = _world(demo)
    kpis = world.step(transfers=_some_transfers(world))
    f = world.last_flows
    # never more leaves a location than it held at the start of the day plus what arrived
    assert (f["transfer_out"] <= f["start"] + f["receipts"] + f["transfer_in"] + 1e-9).all()
    assert kpis["guardrail_violations"] >= 1  # the 10,000-unit transfers were cut
    assert kpis["transfer_units"] == f["transfer_out"].sum()


def test_price_acts_through_the_true_elasticity(demo):
    world = _world(demo)
    k = 0
    price, promo = world.prices_in_effect(world.regular, k)
    base = world.true_rate(price, promo, k)
    cut = world.true_rate(price * 0.9, promo, k)
    sku = np.repeat(np.arange(world.S), world.L)
    ok = base > 0
    np.testing.assert_allclose(cut[ok] / base[ok], 0.9 ** world.elasticity[sku][ok], rtol=1e-9)
    # and the realized demand follows: a world whose prices are 10% lower sells the elastic amount more
    truth = demo.truth["sku"].set_index("sku_id").loc[world.sku_ids, "elasticity"].to_numpy()
    np.testing.assert_allclose(world.elasticity, truth)
    high, low = _world(demo), _world(demo)
    lower = pd.DataFrame({"sku_id": np.repeat(world.sku_ids, world.L), "location_id": np.tile(world.store_ids, world.S),
                          "recommended_price": np.round(world.regular * 0.9, 2)})
    d_high = d_low = r_high = r_low = 0.0
    for day in range(DAYS):
        high.step()
        low.step(prices=lower if day == 0 else None)
        no_promo = ~(world.promo_disc[day] > 0)
        d_high += high.last_flows["demand"][no_promo].sum()
        d_low += low.last_flows["demand"][no_promo].sum()
        r_high += high.last_flows["rate"][no_promo].sum()
        r_low += low.last_flows["rate"][no_promo].sum()
    assert d_low > d_high  # common noise: a lower price never draws less demand
    assert abs(np.log(d_low / d_high) - np.log(r_low / r_high)) < 0.05  # realized lift = the true rate's lift


def test_common_random_numbers_across_arms(demo):
    a, b = _world(demo), _world(demo)
    np.testing.assert_array_equal(a.noise_gamma, b.noise_gamma)
    np.testing.assert_array_equal(a.noise_uniform, b.noise_uniform)
    np.testing.assert_array_equal(a.disrupted, b.disrupted)
    # one arm changes one SKU's price; every other series draws exactly the same demand
    sku = a.sku_ids[0]
    recs = pd.DataFrame({"sku_id": sku, "location_id": a.store_ids,
                         "recommended_price": np.round(a.regular[: a.L] * 1.08, 2)})
    a.step()
    b.step(prices=recs)
    other = np.arange(a.N) >= a.L
    np.testing.assert_array_equal(a.last_flows["demand"][other], b.last_flows["demand"][other])
    # a different seed draws other noise
    c = _world(demo, seed=12)
    assert not np.array_equal(a.noise_uniform, c.noise_uniform)


def test_same_decisions_give_the_same_kpis(demo):
    runs = []
    for _ in range(2):
        w = _world(demo)
        runs.append(pd.DataFrame([w.step(transfers=_some_transfers(w)) for _ in range(DAYS)]))
    pd.testing.assert_frame_equal(runs[0], runs[1])
    tot = summarize_kpis(runs[0])
    assert 0 < tot["fill_rate"] <= 1
    assert tot["price_index"] == pytest.approx(1.0)
    assert tot["gross_profit"] == pytest.approx(tot["revenue"] - tot["cogs"] - tot["transfer_cost"]
                                                - tot["holding_cost"])


def test_agents_see_only_the_contract_tables(demo):
    world = _world(demo)
    for _ in range(3):
        world.step()
    tables = world.observed_tables()
    assert set(tables) == set(CONTRACTS)
    truth_columns = {"demand", "expected_demand", "base_rate", "elasticity", "promo_lift", "order_bias",
                     "demand_estimate"}
    for name, frame in tables.items():
        assert not truth_columns & set(frame.columns), name
    sales = tables["sales"]
    assert sales["date"].max() == START + pd.Timedelta(days=2)  # facts through the day before the current one
    assert tables["traffic"]["date"].max() == START + pd.Timedelta(days=2)
    from retail_dagster.core.contracts import validate_tables

    validate_tables(tables)  # the contracts accept what the world writes


def test_the_world_starts_where_the_history_stops(demo):
    world = _world(demo)
    inv = demo.tables["inventory"]
    last = inv[inv["date"] == inv["date"].max()].set_index(["sku_id", "location_id"])["on_hand"]
    idx = pd.MultiIndex.from_arrays([world.sku_ids[world.series_sku], world.series_loc])
    np.testing.assert_allclose(world.on_hand, last.reindex(idx).fillna(0).to_numpy())
    with pytest.raises(ValueError, match="must end the day before the pilot starts"):
        World(demo, START + pd.Timedelta(days=3), DAYS)
