"""The sender against receivers that never answer: a hung Alertmanager holds back no
channel's notification, and a send under way does not hold the service's exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.notify.alertmanager import Alertmanager
from app.notify.sender import Sender
from tests.app.notify.outbox_events import add_webhook, lone_kill, recorder_for
from tests.app.notify.receiver import Receiver, start_receiver
from tests.conftest import migrated_engine

ROOT = Path(__file__).resolve().parents[3]


def test_a_hung_alertmanager_holds_back_no_channel(tmp_path: Path, receiver: Receiver) -> None:
    engine = migrated_engine(tmp_path / "timers.db")
    hung = start_receiver()
    hung.hold()  # takes the alerts' POST and never answers (for 60 s)
    sender = Sender(engine, "node-a", "http://x")
    sender.alertmanager = Alertmanager(f"http://127.0.0.1:{hung.port}", engine, "http://x", 60.0)
    add_webhook(engine, receiver.url)
    recorder, _ = recorder_for(engine)
    try:
        sender.start()
        lone_kill(recorder, 1, 1)
        sender.wake()
        assert len(hung.wait_for(1)) == 1  # the push is under way, and stuck
        # The channel's notification goes while the push still waits for its answer
        # (its read timeout alone is 10 s).
        assert len(receiver.wait_for(1, timeout=5.0)) == 1
    finally:
        sender.stop()
        hung.close()


_SERVICE = """
import sys
from pathlib import Path

from app.notify.sender import Sender
from tests.app.notify.outbox_events import add_webhook, lone_kill, recorder_for
from tests.conftest import migrated_engine

engine = migrated_engine(Path(sys.argv[1]))
add_webhook(engine, sys.argv[2])
recorder, _ = recorder_for(engine)
lone_kill(recorder, 1, 1)
sender = Sender(engine, "node-a", "http://x")
sender.start()
sys.stdin.readline()
sender.stop()
"""


def test_a_send_under_way_does_not_hold_the_exit(tmp_path: Path, receiver: Receiver) -> None:
    receiver.hold()  # the send waits for an answer that never comes (60 s)
    service = subprocess.Popen(
        [sys.executable, "-c", _SERVICE, str(tmp_path / "timers.db"), receiver.url],
        cwd=ROOT,
        stdin=subprocess.PIPE,
    )
    try:
        assert len(receiver.wait_for(1, timeout=30.0)) == 1  # the send is under way
        assert service.stdin is not None
        service.stdin.write(b"stop\n")
        service.stdin.flush()
        # Stopped and gone while its send still waits: the send alone would hold a
        # thread for its read timeout (10 s) and more.
        assert service.wait(timeout=5.0) == 0
    finally:
        service.kill()
        service.wait()
        assert service.stdin is not None
        service.stdin.close()
