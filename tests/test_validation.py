"""The shared checks: scalar settings and configs read from JSON."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dvae_transform.validation import (
    InputTypeError,
    check_choice,
    check_int,
    check_number,
    check_type,
    from_mapping,
)


def test_scalar_checks_name_the_setting_and_the_value() -> None:
    assert check_int(3, "epochs", low=1) == 3 and check_number(2, "lr", positive=True) == 2.0
    with pytest.raises(InputTypeError, match=r"epochs must be an int, got bool \(True\)"):
        check_int(True, "epochs")
    with pytest.raises(ValueError, match="epochs must be positive, got 0"):
        check_int(0, "epochs", low=1)
    with pytest.raises(ValueError, match=r"quality must be an int in \[1, 100\], got 101"):
        check_int(101, "quality", low=1, high=100)
    with pytest.raises(ValueError, match="lr must be a positive finite number, got inf"):
        check_number(float("inf"), "lr", positive=True)
    with pytest.raises(ValueError, match=r"purified must be an accuracy in \[0, 1\], got 1.5"):
        check_number(1.5, "purified", low=0, high=1, kind="an accuracy")
    with pytest.raises(ValueError, match="dtype must be 'float16' or 'uint8', got 'int8'"):
        check_choice("int8", "dtype", {"uint8", "float16"})
    assert check_type(None, "seed", int, type(None)) is None
    with pytest.raises(InputTypeError, match=r"seed must be an int or None, got str \('1'\)"):
        check_type("1", "seed", int, type(None))
    assert issubclass(InputTypeError, TypeError)


@dataclass(frozen=True)
class _Settings:
    size: int
    name: str = "x"

    def __post_init__(self) -> None:
        check_int(self.size, "size", low=1)


def test_from_mapping_checks_keys_then_values_naming_the_source() -> None:
    assert from_mapping(_Settings, {"size": 2}, "s.json") == _Settings(2)
    with pytest.raises(ValueError, match=r"s.json: unknown key\(s\) \['colour'\]; expected \['size', 'name'\]"):
        from_mapping(_Settings, {"size": 2, "colour": 1}, "s.json")
    with pytest.raises(ValueError, match=r"s.json: missing key\(s\) \['size'\]"):
        from_mapping(_Settings, {}, "s.json")
    with pytest.raises(ValueError, match="s.json: size must be positive, got 0"):
        from_mapping(_Settings, {"size": 0}, "s.json")
    with pytest.raises(InputTypeError, match="s.json: expected a JSON object, got list"):
        from_mapping(_Settings, [], "s.json")
