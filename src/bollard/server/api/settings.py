"""/api/v1/settings: cluster settings, typed, with defaults."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from bollard.domain.settings import REGISTRY, lookup
from bollard.server.api.deps import KickCommandsDep, SettingsDep, WorkDep

router = APIRouter(prefix="/settings", tags=["settings"])


class SettingOut(BaseModel):
    key: str
    value: Any
    default: Any
    type: str
    help: str


class SettingWrite(BaseModel):
    value: Any


def _out(key: str, value: Any) -> SettingOut:
    s = REGISTRY[key]
    return SettingOut(key=key, value=value, default=s.default, type=s.type.__name__, help=s.help)


@router.get("", response_model=list[SettingOut])
async def list_settings(work: WorkDep, settings: SettingsDep) -> list[SettingOut]:
    values = await work.run(settings.all)
    return [_out(k, v) for k, v in sorted(values.items())]


@router.get("/{key}", response_model=SettingOut)
async def get_setting(key: str, work: WorkDep, settings: SettingsDep) -> SettingOut:
    lookup(key)
    return _out(key, await work.run(settings.get, key))


@router.put("/{key}", response_model=SettingOut)
async def set_setting(
    key: str,
    body: SettingWrite,
    work: WorkDep,
    settings: SettingsDep,
    kick_commands: KickCommandsDep,
) -> SettingOut:
    """Change a setting for every server of the cluster; it takes effect at the next use."""
    value = await work.run(settings.set, key, body.value)
    if key.startswith("reconcile.commands."):
        kick_commands()
    return _out(key, value)
