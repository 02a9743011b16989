"""The commit watermark: who may be answered, and when."""

from __future__ import annotations

import asyncio
import threading

from app.db.commit_watermark import CommitWatermark


def test_waiters_are_woken_only_once_every_event_up_to_theirs_is_finished() -> None:
    async def scenario() -> list[bool]:
        watermark = CommitWatermark()
        first = asyncio.ensure_future(watermark.wait(1, timeout=5))
        third = asyncio.ensure_future(watermark.wait(3, timeout=5))
        await asyncio.sleep(0)
        # Finished from another thread, out of order: 3 before 2 leaves a gap.
        writer = threading.Thread(target=watermark.finish, args=([1, 3],))
        writer.start()
        writer.join()
        assert await first
        await asyncio.sleep(0.05)
        assert not third.done()
        watermark.finish([2])
        return [await third, watermark.value == 3]

    assert asyncio.run(scenario()) == [True, True]


def test_a_waiter_that_gives_up_is_not_kept() -> None:
    async def scenario() -> tuple[bool, int, int]:
        watermark = CommitWatermark()
        timed_out = await watermark.wait(1, timeout=0.01)
        cancelled = asyncio.ensure_future(watermark.wait(1, timeout=5))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        return timed_out, len(watermark._waiters), watermark.value

    assert asyncio.run(scenario()) == (False, 0, 0)
