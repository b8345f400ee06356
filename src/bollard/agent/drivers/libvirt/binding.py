"""Loading libvirt-python lazily, so that Bollard runs (with other drivers) without it.

libvirt-python ships no type information: the module is handled as ``Any`` here, at the
boundary, and everything the driver builds from it is typed.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any

INSTALL_HINT = (
    "install it with: pip install 'bollard[libvirt]' "
    "(building it needs the libvirt headers and pkg-config, e.g. "
    "apt-get install libvirt-dev pkg-config)"
)

_lock = threading.Lock()
_module: Any = None


class LibvirtUnavailable(RuntimeError):
    """libvirt-python is not installed (or cannot be loaded)."""


def available() -> bool:
    """Whether libvirt-python can be imported (without importing it)."""
    return importlib.util.find_spec("libvirt") is not None


def load_libvirt() -> Any:
    """The ``libvirt`` module, imported on first use.

    libvirt prints every error to stderr by default; the driver reports errors itself, so
    that default handler is replaced by one that does nothing (once per process).
    """
    global _module
    with _lock:
        if _module is None:
            try:
                module: Any = importlib.import_module("libvirt")
            except ImportError as exc:
                raise LibvirtUnavailable(
                    f"the libvirt driver needs libvirt-python, which cannot be imported "
                    f"({exc}); {INSTALL_HINT}"
                ) from None
            module.registerErrorHandler(_ignore_error, None)
            _module = module
        return _module


def _ignore_error(_ctx: object, _err: object) -> None:
    return None
