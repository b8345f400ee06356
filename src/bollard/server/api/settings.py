"""/api/v1/settings: cluster settings, typed, with defaults."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from bollard.domain.settings import REGISTRY, lookup
from bollard.server.api.deps import KickCommandsDep, SettingsDep, WorkDep

router = APIRouter(prefix="/settings", tags=["settings"])


class SettingOut(BaseModel):
    key: str
    value: Any
    default: Any
    type: str
    help: str
    allowed: str = Field(description='What the setting accepts, e.g. "a number from 1 to 600".')
    minimum: float | None = Field(default=None, description="Smallest value (numbers).")
    maximum: float | None = Field(default=None, description="Largest value (numbers).")
    choices: list[str] | None = Field(default=None, description="The values allowed (text).")


class SettingWrite(BaseModel):
    value: Any


def setting_out(key: str, value: Any) -> SettingOut:
    s = REGISTRY[key]
    return SettingOut(
        key=key,
        value=value,
        default=s.default,
        type=s.type.__name__,
        help=s.help,
        allowed=s.allowed,
        minimum=s.minimum,
        maximum=s.maximum,
        choices=list(s.choices) if s.choices is not None else None,
    )


@router.get("", response_model=list[SettingOut])
async def list_settings(work: WorkDep, settings: SettingsDep) -> list[SettingOut]:
    values = await work.run(settings.all)
    return [setting_out(k, v) for k, v in sorted(values.items())]


@router.get("/{key}", response_model=SettingOut)
async def get_setting(key: str, work: WorkDep, settings: SettingsDep) -> SettingOut:
    lookup(key)
    return setting_out(key, await work.run(settings.get, key))


@router.put("/{key}", response_model=SettingOut)
async def set_setting(
    key: str,
    body: SettingWrite,
    work: WorkDep,
    settings: SettingsDep,
    kick_commands: KickCommandsDep,
) -> SettingOut:
    """Change a setting for every server of the cluster; it takes effect at the next use.
    A value of the wrong type, outside the setting's range, NaN or infinite is refused (422
    naming the setting, the value and the range)."""
    value = await work.run(settings.set, key, body.value)
    if key.startswith("reconcile.commands."):
        kick_commands()
    return setting_out(key, value)
