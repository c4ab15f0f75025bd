"""status.json (kernel/status_snapshot.py): written, and the same schema as protocol.Status."""
from __future__ import annotations

from tests.kernel.kernel_driver import M5
from tests.support.status_reader import read_status
from tests.support.waiting import wait_until


def test_status_json_is_written_and_parses(driver):
    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)
    driver.kernel.status.publish()

    def written() -> dict | None:
        # Written off the tick thread, atomically: no file yet is "not yet", a torn one a bug.
        st = read_status(driver.state_dir)
        return st if st is not None and st["slots"] and st["slots"][0]["cycles"] >= 1 else None

    st = wait_until(written, timeout=10, what="status.json with the slot's first cycle", poll=0.01)
    assert st["slots"][0]["id"] == "btc-5m" and st["slots"][0]["cycles"] >= 1
    assert st["pid"] == driver.kernel.pid


def test_the_snapshot_is_protocol_status_key_for_key(driver):
    from kernel.protocol import LedgerSummary, SlotStatus, Status

    driver.add_slot("btc-5m", "flip")
    driver.advance(M5)
    snap = driver.kernel.snapshot()
    assert list(snap) == list(Status.model_fields)
    assert list(snap["slots"][0]) == list(SlotStatus.model_fields)
    assert list(snap["ledger"]) == list(LedgerSummary.model_fields)
    status = Status.model_validate(snap)
    assert status.state == "running" and status.slots[0].cycles == 1
    assert snap["broker"] == {"name": "paper"}
    assert snap["halt"] == {"engaged": False, "since": None, "reason": None, "cancelled_orders": []}
    assert snap["tick"] == driver.kernel.tick and snap["pid"] == driver.kernel.pid
