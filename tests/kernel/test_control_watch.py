"""control.json as the tick sees it (kernel/control_watch.py)."""
from __future__ import annotations

import os


def test_a_halt_rewritten_in_place_within_one_timestamp_is_seen_at_the_next_tick(driver):
    """control.json is read at the top of every tick. A file rewritten in place with the same
    size within the filesystem's timestamp granularity (coarse clocks: 1-2 s on some
    filesystems) has the same (inode, mtime, size) as before: that must not hide a halt."""
    path = driver.state_dir / "control.json"
    k = driver.kernel
    path.write_text('{"halt": false}')
    k.tick_once()
    assert k.snapshot()["state"] == "running"
    before = os.stat(path)
    with open(path, "r+") as f:  # in place, as some editors save
        f.write('{"halt": "yes"}')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # what a coarse clock records
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    k.tick_once()
    assert k.snapshot()["state"] == "halted"
    assert k.halt.observed_tick == k.tick
