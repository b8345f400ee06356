"""noVNC for the graphical console: where the server finds it, whether a browser can load
core/rfb.js from a copy, and serving it at /ui/novnc (before a mount of /ui)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from bollard.server.web import novnc
from bollard.server.web.novnc import DEBIAN_DIR, NOVNC_ENV, find_novnc, mount_novnc, problems


def _copy(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


GOOD = {
    "core/rfb.js": 'import Display from "./display.js";\nimport {\n  inflate\n} from '
    "'../vendor/pako/inflate.js';\nexport default class RFB {}\n",
    "core/display.js": "export * from './util/log.js';\nexport default class Display {}\n",
    "core/util/log.js": "export const x = 1;\n",
    "vendor/pako/inflate.js": "export function inflate() {}\n",
}


def test_a_copy_whose_modules_all_resolve_in_it_has_no_problems(tmp_path: Path) -> None:
    assert problems(_copy(tmp_path, GOOD)) == []


def test_bare_missing_and_escaping_imports_are_problems(tmp_path: Path) -> None:
    copy = _copy(tmp_path / "novnc", {
        **GOOD,
        "core/rfb.js": GOOD["core/rfb.js"] + 'import pako from "pako";\n'
        'import "./gone.js";\nimport x from "../../outside.js";\n',
    })  # fmt: skip
    (tmp_path / "outside.js").write_text("export default 1;\n")
    assert problems(copy) == [
        "core/rfb.js: imports 'pako', which a browser cannot resolve",
        "core/rfb.js: imports './gone.js', which is missing",
        f"core/rfb.js: imports '../../outside.js', outside {copy}",
    ]
    assert novnc.main(["check", str(copy)]) == 1
    assert novnc.main(["check", str(_copy(tmp_path / "good", GOOD))]) == 0
    assert novnc.main(["check", str(tmp_path / "empty")]) == 1


@pytest.mark.skipif(not (DEBIAN_DIR / "core/rfb.js").is_file(), reason="no Debian novnc here")
def test_debians_novnc_can_be_served_as_it_is() -> None:
    assert problems(DEBIAN_DIR) == []


def test_where_novnc_is_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _copy(tmp_path / "mine", GOOD)
    assert find_novnc(mine, env={}) == mine.resolve()
    assert find_novnc(None, env={NOVNC_ENV: str(mine)}) == mine.resolve()
    assert find_novnc(tmp_path / "nothing", env={}) is None  # asked for: only there
    prefix = tmp_path / "venv"
    _copy(prefix / "share" / "bollard" / "novnc", GOOD)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    assert find_novnc(None, env={}) == (prefix / "share/bollard/novnc").resolve()
    monkeypatch.setattr(novnc, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "empty-venv"))
    assert find_novnc(None, env={}) is None
    assert "graphical console is unavailable" in novnc.unavailable_message()


def test_novnc_is_served_read_only_before_the_console(tmp_path: Path) -> None:
    app = FastAPI()
    ui = _copy(tmp_path / "ui", {"index.html": "<p>console</p>"})
    app.mount("/ui", StaticFiles(directory=ui, html=True))  # as the console is, first
    mount_novnc(app, _copy(tmp_path / "novnc", GOOD))

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bollard") as client:
            return [
                await client.get("/ui/novnc/core/rfb.js"),
                await client.get("/ui/novnc/core/nope.js"),
                await client.put("/ui/novnc/core/rfb.js", content=b"x"),
                await client.get("/ui/"),
            ]

    rfb, missing, put, console = asyncio.run(ask())
    assert rfb.status_code == 200 and "class RFB" in rfb.text
    assert "javascript" in rfb.headers["content-type"]
    assert "default-src 'self'" in rfb.headers["content-security-policy"]
    assert missing.status_code == 404
    assert put.status_code == 405
    assert console.text == "<p>console</p>"
