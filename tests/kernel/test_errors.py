"""The kernel's error vocabulary (kernel/errors.py): the one validation-error formatter."""
from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from kernel.errors import format_validation_error
from kernel.protocol import SlotConfig


class Four(BaseModel):
    a: int
    b: int
    c: int
    d: int


class Outer(BaseModel):
    items: list[Four]


def _error(model: type[BaseModel], value: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(value)
    return info.value


def test_the_first_three_problems_in_one_line():
    assert format_validation_error(_error(Four, {})) == "a: Field required; b: Field required; c: Field required"


def test_a_nested_field_is_named_by_its_dotted_path():
    err = _error(Outer, {"items": [{"a": 1, "b": 2, "c": 3, "d": "x"}]})
    assert format_validation_error(err) == (
        "items.0.d: Input should be a valid integer, unable to parse string as an integer")


def test_a_slot_config_error_names_the_field_and_the_rule():
    err = _error(SlotConfig, {"id": "btc-5m", "symbol": "BTC/USDT", "timeframe": "7m", "strategy": "flip"})
    assert format_validation_error(err).startswith("timeframe: Value error, timeframe must be one of 1m, 3m")
