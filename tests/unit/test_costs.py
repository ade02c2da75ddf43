"""What requests cost (app/domain/limits.py), fair turns at the signing helper (app/storage/turns.py) and the
per-key cap on large answers in flight (app/uploads/service.py): pure rules and plain asyncio, no servers."""

from __future__ import annotations

import asyncio

import pytest

from app.domain.errors import ApiError
from app.domain.limits import (
    COST_UNITS,
    Charge,
    RateState,
    RouteClass,
    charge_spent,
    complete_cost,
    parse_rates,
    part_urls_cost,
    refresh_cost,
)
from app.settings import Settings
from app.storage.turns import FairTurns
from app.uploads.service import Streams


def test_costs_grow_with_the_work() -> None:
    assert [part_urls_cost(n) for n in (0, 1, 2, 500, 10_000)] == [1, 1, 2, 500, 10_000]
    assert [complete_cost(n) for n in (0, 1, 99, 100, 199, 200, 10_000)] == [1, 1, 1, 2, 2, 3, 101]
    assert [refresh_cost(n) for n in (0, 1, 64)] == [0, 1, 64]
    assert set(COST_UNITS) == set(RouteClass)


def test_default_buckets_hold_the_largest_single_request() -> None:
    rates = parse_rates("")
    assert rates[RouteClass.PART_URLS].burst >= part_urls_cost(10_000)  # every URL of the largest file at once
    assert rates[RouteClass.COMPLETE].burst >= complete_cost(10_000)
    largest = Settings().uploads.max_files_per_group
    assert rates[RouteClass.READS].burst >= 1 + refresh_cost(largest)  # a read refreshing the largest group


def test_a_charge_reports_the_latest_bucket_and_what_was_spent() -> None:
    charge = Charge(RouteClass.PART_URLS)
    assert charge.headers() == {} and charge_spent(charge) == 0 and charge_spent(None) == 0
    charge.took(RateState(True, 99, 0, 10.0, 100), 1)
    charge.took(RateState(True, 39, 0, 10.0, 100), 60)
    assert charge.spent == 61
    assert charge.headers() == {"RateLimit-Policy": '"part_urls";q=100;w=10', "RateLimit": '"part_urls";r=39;t=7'}
    charge.took(RateState(False, 39, 2100, 10.0, 100), 60)  # refused: nothing spent, the headers say when
    assert charge.spent == 61 and charge.headers()["Retry-After"] == "3"


def test_a_cost_the_bucket_can_never_hold_gets_no_retry_after() -> None:
    never = RateState(False, 100, -1, 10.0, 100)
    assert "Retry-After" not in never.headers(RouteClass.PART_URLS)


async def test_fair_turns_serve_keys_in_rotation() -> None:
    turns = FairTurns()
    order: list[str] = []
    gate = asyncio.Event()

    async def job(who: str, tag: str) -> None:
        async with turns.turn(who):
            if tag == "first":
                await gate.wait()  # holds the turn while the others queue up
            order.append(tag)

    first = asyncio.create_task(job("noisy", "first"))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(job("noisy", f"noisy-{i}")) for i in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(job("quiet", "quiet")))
    tasks.append(asyncio.create_task(job("third", "third")))
    await asyncio.sleep(0)
    assert turns.waiting == 7
    gate.set()
    await asyncio.gather(first, *tasks)
    # After the holder: one noisy, then quiet and third (each waited for one noisy turn, not five), then the rest.
    assert order == ["first", "noisy-0", "quiet", "third", "noisy-1", "noisy-2", "noisy-3", "noisy-4"]
    assert turns.waiting == 0


async def test_a_cancelled_waiter_leaves_the_line_and_the_turn_passes_on() -> None:
    turns = FairTurns()
    held = asyncio.Event()
    release = asyncio.Event()
    done: list[str] = []

    async def holder() -> None:
        async with turns.turn("a"):
            held.set()
            await release.wait()

    async def waiter(who: str) -> None:
        async with turns.turn(who):
            done.append(who)

    h = asyncio.create_task(holder())
    await held.wait()
    gone = asyncio.create_task(waiter("b"))
    kept = asyncio.create_task(waiter("c"))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert turns.waiting == 1
    release.set()
    await asyncio.gather(h, kept)
    assert done == ["c"] and turns.waiting == 0
    async with turns.turn("d"):  # free again: taken at once
        pass


def test_a_key_may_have_a_few_large_answers_in_flight_and_others_are_not_affected() -> None:
    streams = Streams(per_key=2)
    a1, a2 = streams.open("a"), streams.open("a")
    with pytest.raises(ApiError) as caught:
        streams.open("a")
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "1"
    b = streams.open("b")  # another key: its own share
    assert streams.in_flight == 3
    a1.close()
    a1.close()  # closing twice frees one slot, once
    a3 = streams.open("a")
    for slot in (a2, a3, b):
        slot.close()
    assert streams.in_flight == 0
