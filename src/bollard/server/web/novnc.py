"""noVNC, the VNC client the console's graphical console page runs, served at /ui/novnc.

Bollard does not ship noVNC; it serves a copy found on the server's machine, read-only:

1. ``--novnc-dir`` (or ``BOLLARD_NOVNC_DIR``);
2. ``<sys.prefix>/share/bollard/novnc``, where ``scripts/web/install-novnc.sh VENV`` puts the
   pinned npm package ``@novnc/novnc``;
3. ``/usr/share/novnc``, Debian's ``novnc`` package.

The page imports ``/ui/novnc/core/rfb.js`` as an ES module, so a usable copy has ``core/rfb.js``
and every module it imports, directly or not, with relative specifiers that stay inside the
copy (a browser cannot resolve the bare npm names a bundler would): `problems` checks that.
Without one, the graphical console is unavailable and everything else works.

``python -m bollard.server.web.novnc check DIR`` prints what `problems` finds (exit 1 if any).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from fastapi import FastAPI
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from bollard.server.web.assets import ConsoleHeaders

NOVNC_PATH = "/ui/novnc"
NOVNC_ENV = "BOLLARD_NOVNC_DIR"
DEBIAN_DIR = Path("/usr/share/novnc")
ENTRY = "core/rfb.js"
UNAVAILABLE = (
    "noVNC not found (--novnc-dir, BOLLARD_NOVNC_DIR, {prefix}, /usr/share/novnc): the "
    "graphical console is unavailable (scripts/web/install-novnc.sh installs it)"
)

# `import x from "y"`, `export {x} from "y"`, `import "y"`, `import("y")`: the "y".
_SPECIFIER = re.compile(
    r"""(?:\bimport|\bexport)\s*(?:[\w*{}\s,$]+?\s*from\s*)?\(?\s*["']([^"']+)["']"""
)


def installed_dir() -> Path:
    """Where install-novnc.sh puts noVNC for the Python environment the server runs in."""
    return Path(sys.prefix) / "share" / "bollard" / "novnc"


def candidates(option: Path | str | None = None, env: Mapping[str, str] = os.environ) -> list[Path]:
    """Where noVNC is looked for, in order (see the module docstring)."""
    chosen = option or env.get(NOVNC_ENV)
    if chosen:
        return [Path(chosen)]  # asked for: only there
    return [installed_dir(), DEBIAN_DIR]


def find_novnc(
    option: Path | str | None = None, env: Mapping[str, str] = os.environ
) -> Path | None:
    """The first candidate that has ``core/rfb.js``; None if none has."""
    for directory in candidates(option, env):
        if (directory / ENTRY).is_file():
            return directory.resolve()
    return None


def unavailable_message() -> str:
    """One line for the server's log when `find_novnc` found nothing."""
    return UNAVAILABLE.format(prefix=installed_dir())


def problems(directory: Path) -> list[str]:
    """Why the browser could not load ``core/rfb.js`` from this copy as an ES module: bare
    specifiers, imports that leave the copy, files that are missing. [] when it can."""
    root = Path(os.path.abspath(directory))  # symbolic links are followed (as they are served)
    found: list[str] = []
    todo, seen = [root / ENTRY], set[Path]()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        where = module.relative_to(root) if module.is_relative_to(root) else module
        try:
            text = module.read_text(encoding="utf-8")
        except OSError as exc:
            found.append(f"{where}: cannot be read ({exc.strerror or exc})")
            continue
        for spec in _SPECIFIER.findall(text):
            if not spec.startswith(("./", "../", "/")):
                found.append(f"{where}: imports {spec!r}, which a browser cannot resolve")
                continue
            target = Path(os.path.normpath(module.parent / spec))
            if not target.is_relative_to(root):
                found.append(f"{where}: imports {spec!r}, outside {root}")
            elif not target.is_file():
                found.append(f"{where}: imports {spec!r}, which is missing")
            else:
                todo.append(target)
    return found


def mount_novnc(app: FastAPI, directory: Path) -> None:
    """Serve ``directory`` read-only at /ui/novnc, with the console's headers. It is put
    before every other route, so that a mount of /ui added earlier does not hide it."""
    files = StaticFiles(directory=directory, follow_symlink=True)
    app.router.routes.insert(0, Mount(NOVNC_PATH, ConsoleHeaders(files), name="novnc"))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "check":
        print("usage: python -m bollard.server.web.novnc check DIR", file=sys.stderr)
        return 2
    directory = Path(argv[1])
    if not (directory / ENTRY).is_file():
        print(f"{directory} has no {ENTRY}: not a noVNC copy", file=sys.stderr)
        return 1
    found = problems(directory)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
