"""Where the CLI finds its server: BOLLARD_URL/BOLLARD_TOKEN, else the context `bollard up` wrote.

The context file is ``$BOLLARD_CONFIG_DIR/context.json`` (default
``~/.config/bollard/context.json``) and holds ``{"url", "data_dir", "token_file", "ca_file",
"client_cert", "client_key"}``: the token itself stays in the data dir's ``admin.token``
(mode 0600) and is never copied; ``ca_file`` is the CA the CLI verifies the server's
certificate with (https URLs), ``client_cert``/``client_key`` the certificate it presents when
the server asks for one (``bollard up --client-certs``). `bollard down` removes the context
of the cluster it stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Context:
    url: str
    data_dir: str
    token_file: str
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @property
    def fabric_dir(self) -> Path:
        return fabric_dir_of(Path(self.data_dir))


def fabric_dir_of(data_dir: Path) -> Path:
    """The sim fabric of a cluster started by `bollard up --data-dir DATA_DIR`."""
    return data_dir / "fabric"


def config_dir() -> Path:
    env = os.environ.get("BOLLARD_CONFIG_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bollard"


def context_path() -> Path:
    return config_dir() / "context.json"


def _optional(data: dict[str, object], key: str) -> str | None:
    value = data.get(key)
    return str(value) if value else None


def load_context() -> Context | None:
    path = context_path()
    try:
        data = json.loads(path.read_text())
        return Context(
            url=data["url"],
            data_dir=data["data_dir"],
            token_file=data["token_file"],
            ca_file=_optional(data, "ca_file"),
            client_cert=_optional(data, "client_cert"),
            client_key=_optional(data, "client_key"),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_context(ctx: Context) -> Path:
    path = context_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(ctx), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def forget_context(data_dir: Path) -> Path | None:
    """Remove the context if it points at the cluster in ``data_dir``; the path removed."""
    ctx = load_context()
    if ctx is None:
        return None
    try:
        same = Path(ctx.data_dir).expanduser().resolve() == data_dir.expanduser().resolve()
    except OSError:
        same = False
    if not same:
        return None
    path = context_path()
    path.unlink(missing_ok=True)
    return path
