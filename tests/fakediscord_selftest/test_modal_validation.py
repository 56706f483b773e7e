"""The fake refuses modals whose text inputs real Discord refuses (50035 Invalid Form Body)."""

from __future__ import annotations

from typing import Any

import discord
import pytest

from tests.fakediscord.validation import check_modal


def _modal(**text_input: Any) -> dict[str, Any]:
    component = {"type": 4, "custom_id": "prompt", "style": 2, **text_input}
    return {
        "title": "Remix",
        "custom_id": "remix:1",
        "components": [{"type": 18, "label": "Prompt", "component": component}],
    }


def _fields(errors: list[Any]) -> list[str]:
    return [".".join(str(part) for part in error.path) for error in errors]


def test_a_valid_labelled_text_input_passes() -> None:
    assert check_modal(_modal(value="a cat", min_length=1, max_length=1600), ("data",)) == []


@pytest.mark.parametrize(
    ("text_input", "field"),
    [
        ({"value": "x" * 11, "max_length": 10}, "data.components.0.component.value"),
        ({"value": "x" * 4001}, "data.components.0.component.value"),
        ({"max_length": 4001}, "data.components.0.component.max_length"),
        ({"max_length": 0}, "data.components.0.component.max_length"),
        ({"min_length": 4001}, "data.components.0.component.min_length"),
        ({"min_length": 5, "max_length": 4}, "data.components.0.component.min_length"),
        ({"style": 3}, "data.components.0.component.style"),
        ({"placeholder": "p" * 101}, "data.components.0.component.placeholder"),
    ],
)
def test_text_input_bounds(text_input: dict[str, Any], field: str) -> None:
    assert field in _fields(check_modal(_modal(**text_input), ("data",)))


def test_label_bounds_and_unlabelled_inputs_in_rows() -> None:
    long_label = _modal()
    long_label["components"][0]["label"] = "L" * 46
    assert "data.components.0.label" in _fields(check_modal(long_label, ("data",)))
    row = {
        "title": "Old style",
        "custom_id": "m",
        "components": [{"type": 1, "components": [{"type": 4, "custom_id": "a", "style": 1}]}],
    }
    assert "data.components.0.components.0.label" in _fields(check_modal(row, ("data",)))


async def test_discord_py_modals_pass() -> None:
    """What discord.py sends for a labelled paragraph input with a pre-filled value."""
    modal = discord.ui.Modal(title="Remix: Reroll", custom_id="imagine:remix:r:" + "a" * 32)
    modal.add_item(
        discord.ui.Label(
            text="Prompt and flags",
            component=discord.ui.TextInput(
                custom_id="prompt", style=discord.TextStyle.paragraph, default="a cat",
                max_length=1600,
            ),
        )
    )
    assert check_modal(modal.to_dict(), ("data",)) == []
