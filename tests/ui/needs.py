"""What the browser tests need on this machine, and why they are skipped without it.

No Playwright import here: conftest.py reads this before anything tries to import it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "scripts/browser/install.sh .venv installs it (as root)"


def unavailable_reason() -> str | None:
    """None when the browser tests can run here, else the one-line reason they cannot."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"Debian's Chromium ({CHROMIUM}) is not installed; {INSTALL}"
    if importlib.util.find_spec("playwright") is None:
        return f"Playwright's Python package is not installed in this venv; {INSTALL}"
    if shutil.which("certutil") is None:
        return (
            "NSS's certutil (Debian's libnss3-tools) is missing: it makes Chromium trust the"
            f" test cluster's CA; {INSTALL}"
        )
    return None
