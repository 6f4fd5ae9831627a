"""The lease heartbeat: keeps beating through errors, ends when a beat says so or on stop."""

from __future__ import annotations

import threading
import time

from worker.heartbeat import Heartbeat


class Scripted(Heartbeat):
    """Beats follow a script: "err" raises, "go" continues, "end" returns False."""

    def __init__(self, script: list[str]) -> None:
        super().__init__("scripted", 0.001)
        self.script = list(script)
        self.beats = 0
        self.done = threading.Event()

    def beat(self) -> bool:
        self.beats += 1
        step = self.script.pop(0) if self.script else "go"
        if step == "err":
            raise ConnectionError("database went away")
        if step == "end":
            self.done.set()
            return False
        return True


def test_a_failing_beat_is_retried_and_a_false_beat_ends_the_thread() -> None:
    hb = Scripted(["err", "err", "go", "end", "go"])
    hb.start()
    hb.join(timeout=5)
    assert not hb.is_alive()
    assert hb.done.is_set() and hb.beats == 4  # the beat after "end" never ran


def test_stop_ends_a_thread_that_would_beat_forever() -> None:
    hb = Scripted([])
    hb.start()
    deadline = time.monotonic() + 5
    while hb.beats < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert hb.beats >= 3
    hb.stop()
    assert not hb.is_alive()
