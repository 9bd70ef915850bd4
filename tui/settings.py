"""Model and limit settings editable inside the TUI, as text fields over :class:`RLMConfig`.

:data:`FIELDS` lists what the settings screen shows; :func:`current_values`
reads them from a config as text and :func:`apply_settings` turns edited text
back into a new, validated config (``dataclasses.replace``; the config stays
frozen). Empty optional fields mean "no limit" / "not set".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlm.config import RLMConfig
from rlm.errors import ConfigError

__all__ = ["FIELDS", "SettingField", "apply_settings", "current_values"]


@dataclass(frozen=True)
class SettingField:
    """One editable setting: its config attribute, label, parser and whether it may be empty."""

    name: str
    label: str
    parse: Callable[[str], Any]
    optional: bool = False
    sandbox: bool = False  # lives in config.sandbox


FIELDS: tuple[SettingField, ...] = (
    SettingField("model", "model (litellm string)", str),
    SettingField("sub_model", "sub-model (empty: same as model)", str, optional=True),
    SettingField("api_base", "API base URL", str, optional=True),
    SettingField("max_depth", "max depth", int),
    SettingField("max_iterations", "max iterations per agent", int),
    SettingField("max_llm_calls", "max LM calls (whole tree)", int),
    SettingField("max_tokens", "max tokens (whole tree)", int, optional=True),
    SettingField("max_cost_usd", "max cost USD (whole tree)", float, optional=True),
    SettingField("timeout_s", "timeout seconds (whole run)", float, optional=True),
    SettingField("cell_timeout_s", "cell timeout seconds", float, sandbox=True),
    SettingField("max_concurrency", "max concurrency per batch", int),
)


def current_values(config: RLMConfig) -> dict[str, str]:
    """Each field's value in ``config`` as text ('' for None)."""
    values = {}
    for field in FIELDS:
        value = getattr(config.sandbox if field.sandbox else config, field.name)
        values[field.name] = "" if value is None else str(value)
    return values


def apply_settings(config: RLMConfig, values: dict[str, str]) -> RLMConfig:
    """A new config with the edited ``values``; raises :class:`ConfigError` naming the bad field."""
    top: dict[str, Any] = {}
    sandbox: dict[str, Any] = {}
    for field in FIELDS:
        text = values.get(field.name, "").strip()
        if not text and not field.optional:
            raise ConfigError(f"{field.label}: a value is required")
        try:
            value = field.parse(text) if text else None
        except ValueError:
            raise ConfigError(f"{field.label}: {text!r} is not a valid {field.parse.__name__}") from None
        (sandbox if field.sandbox else top)[field.name] = value
    new_sandbox = dataclasses.replace(config.sandbox, **sandbox)
    return dataclasses.replace(config, **top, sandbox=new_sandbox)
