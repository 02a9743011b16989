"""The database readers' slots (app.access.reader_slots): a bounded wait then 503, and one
user's share, so a user holding every read it can (big pages over many connections)
leaves slots to every other user and to root (issue 20 review).

Before the share, one user's reads held all four slots and everyone else's reads,
root's dashboard among them, waited 5 s and got 503."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import anyio
import pytest
from fastapi import HTTPException

from app.access.reader_slots import EXEMPT, ReaderSlots

ATTACKER, OTHER = 1000, 1001
WAIT = 0.3  # the slots' patience here; nothing below depends on how fast it runs


async def hold(slots: ReaderSlots, user: int | str | None, release: anyio.Event) -> None:
    """A read that keeps its slot until ``release`` (or, finding none, gets its 503)."""
    with contextlib.suppress(HTTPException):
        async with slots.slot(user):
            await release.wait()


async def read_once(slots: ReaderSlots, user: int | str | None) -> str:
    """What one read gets: 'served', or the 503's detail."""
    try:
        async with slots.slot(user):
            return "served"
    except HTTPException as error:
        assert error.status_code == 503 and error.headers == {"Retry-After": "2"}
        return str(error.detail)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    anyio.run(scenario)


def test_one_users_reads_hold_at_most_its_share_and_others_are_served() -> None:
    async def scenario() -> None:
        slots = ReaderSlots(slots=4, wait=WAIT, per_user=2)
        release = anyio.Event()
        async with anyio.create_task_group() as group:
            for _ in range(6):  # a flood of the attacker's reads that never finish
                group.start_soon(hold, slots, ATTACKER, release)
            await anyio.sleep(0.05)
            refused = await read_once(slots, ATTACKER)
            assert "your reads have held 2 of the 4 database readers" in refused, refused
            # Another user and root are served meanwhile: two slots stay free.
            assert await read_once(slots, OTHER) == "served"
            assert await read_once(slots, EXEMPT) == "served"
            assert await read_once(slots, None) == "served"  # a remote peer
            release.set()
        assert slots._shares == {}  # no user's share outlives its reads

    run(scenario)


def test_exempt_readers_take_every_slot_then_wait_and_get_503() -> None:
    async def scenario() -> None:
        slots = ReaderSlots(slots=2, wait=WAIT, per_user=1)
        release = anyio.Event()
        async with anyio.create_task_group() as group:
            for _ in range(2):
                group.start_soon(hold, slots, EXEMPT, release)
            await anyio.sleep(0.05)
            refused = await read_once(slots, OTHER)
            assert "all 2 database readers have been in use" in refused, refused
            release.set()
        assert await read_once(slots, OTHER) == "served"

    run(scenario)


@pytest.mark.parametrize("user", [ATTACKER, None])
def test_a_share_is_given_back_after_a_read_that_raised(user: int | None) -> None:
    async def scenario() -> None:
        slots = ReaderSlots(slots=2, wait=WAIT, per_user=1)
        with pytest.raises(RuntimeError):
            async with slots.slot(user):
                raise RuntimeError("the route failed")
        assert await read_once(slots, user) == "served"
        assert slots._shares == {}

    run(scenario)
