"""The kernel's switches (kernel/run_state.py) and the state name status.json shows."""
from __future__ import annotations

from kernel.run_state import RunState


def test_the_state_name_puts_stopped_then_halted_first():
    assert RunState().state_name(halted=False) == "running"
    assert RunState(paused=True).state_name(halted=False) == "paused"
    assert RunState(paused=True).state_name(halted=True) == "halted"
    assert RunState(running=False).state_name(halted=False) == "stopped"
    assert RunState(running=False).state_name(halted=True) == "halted"
    assert RunState(stopped=True).state_name(halted=True) == "stopped"
