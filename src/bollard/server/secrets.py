"""Power credentials at rest: encrypted (Fernet) with a key only the server can read.

The key is `<data-dir>/secret.key` (mode 0600), made at first use; servers that share a
database must share the key. Credentials are never returned by the API or written to logs.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from bollard.domain.errors import BollardError
from bollard.server.auth import write_secret_file

KEY_FILE = "secret.key"


class SecretError(BollardError):
    code = "secret-unreadable"


class SecretBox:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / KEY_FILE
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            if not self.path.exists():
                write_secret_file(self.path, Fernet.generate_key().decode())
            self._fernet = Fernet(self.path.read_text().strip().encode())
        return self._fernet

    def seal(self, values: dict[str, str]) -> str:
        return self._key().encrypt(json.dumps(values).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        try:
            data = json.loads(self._key().decrypt(sealed.encode()))
        except (InvalidToken, ValueError) as exc:
            raise SecretError(
                f"stored credentials cannot be decrypted with {self.path} (another key?)"
            ) from exc
        return {str(k): str(v) for k, v in data.items()}
