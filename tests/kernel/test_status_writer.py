"""status.json's writer (kernel/status_writer.py): compact JSON, the slots' encoding reused when
a snapshot reuses the previous slots list (a halt's first status), ``after`` run once written."""
from __future__ import annotations

import json
import threading

from kernel.status_writer import StatusWriter
from tests.support.waiting import wait_until


def test_a_snapshot_that_reuses_the_slots_list_is_written_whole_and_in_key_order(tmp_path):
    path = tmp_path / "status.json"
    w = StatusWriter(path)
    try:
        slots = [{"id": "a", "note": "\x00slots\x00 is text here"}, {"id": "b", "qty": 1.5}]
        first = {"state": "running", "slots": slots, "fills": [], "tick": 1}
        w.write_now(first)
        assert json.loads(path.read_text()) == first
        done = threading.Event()
        second = {"state": "halted", "slots": slots, "fills": [{"fill_id": "f1"}], "tick": 2}
        w.publish(second, after=done.set)
        assert done.wait(10), "after runs once the status is written"
        text = path.read_text()
        assert json.loads(text) == second and list(json.loads(text)) == ["state", "slots", "fills", "tick"]
        assert "\n" not in text.rstrip("\n"), "compact: one line"
        third = {"state": "running", "slots": [{"id": "c", "x": float("nan")}], "fills": [], "tick": 3}
        w.publish(third)
        wait_until(lambda: json.loads(path.read_text())["tick"] == 3, timeout=10, what="the third status")
        assert json.loads(path.read_text())["slots"] == [{"id": "c", "x": None}], "NaN is reported as null"
    finally:
        w.close()
