"""libvirt errors → Driver* errors, with fake libvirtError objects (no libvirt needed)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from bollard.agent.drivers.libvirt.errors import (
    Err,
    From,
    is_connection_lost,
    is_unsupported,
    map_error,
)
from bollard.domain.errors import (
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)


@dataclass
class FakeLibvirtError(Exception):
    code: int
    message: str | None
    domain: int = 10  # VIR_FROM_QEMU

    def get_error_code(self) -> int | None:
        return self.code

    def get_error_domain(self) -> int | None:
        return self.domain

    def get_error_message(self) -> str | None:
        return self.message


@pytest.mark.parametrize(
    ("code", "domain", "expected"),
    [
        (Err.NO_DOMAIN, 10, DriverNotFound),
        (Err.NO_DOMAIN_METADATA, 10, DriverNotFound),
        (Err.OPERATION_INVALID, 10, DriverInvalidState),
        (Err.DOM_EXIST, 10, DriverInvalidState),
        (Err.NO_CONNECT, 0, DriverTemporary),
        (Err.INVALID_CONN, 0, DriverTemporary),
        (Err.RPC, From.RPC, DriverTemporary),
        (Err.SYSTEM_ERROR, From.RPC, DriverTemporary),
        (Err.SYSTEM_ERROR, 10, DriverTemporary),
        (Err.OPERATION_TIMEOUT, 10, DriverTemporary),
        (Err.AGENT_UNRESPONSIVE, 10, DriverTemporary),
        (Err.RESOURCE_BUSY, 10, DriverTemporary),
        (Err.INTERNAL_ERROR, 10, DriverPermanent),
        (Err.CONFIG_UNSUPPORTED, 10, DriverPermanent),
        (Err.INVALID_ARG, 10, DriverPermanent),
        (Err.AUTH_FAILED, 0, DriverPermanent),
        (Err.ACCESS_DENIED, 0, DriverPermanent),
        (12345, 0, DriverPermanent),  # a code this version does not know
    ],
)
def test_codes_map_to_driver_errors(code: int, domain: int, expected: type) -> None:
    error = map_error(FakeLibvirtError(code, "something happened", domain), "start abc")
    assert type(error) is expected
    assert error.message == "libvirt: start abc: something happened"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (Err.INVALID_ARG, "invalid argument: could not find capabilities for domaintype=kvm"),
        (Err.CONFIG_UNSUPPORTED, "unsupported configuration: Domain requires KVM, but it is "
         "not available. Check that virtualization is enabled in the host BIOS"),
        (Err.INTERNAL_ERROR, "internal error: process exited while connecting to monitor: "
         "Could not access KVM kernel module: No such file or directory"),
        (Err.OPERATION_FAILED, "qemu-system-x86_64: failed to initialize kvm: Permission denied"),
        (Err.SYSTEM_ERROR, "KVM is not available"),
        (Err.INTERNAL_ERROR, "internal error: process exited while connecting to monitor: "
         "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: "
         "../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed."),
    ],
)  # fmt: skip
def test_no_kvm_is_permanent_and_names_the_option(code: int, message: str) -> None:
    error = map_error(FakeLibvirtError(code, message), "start abc")
    assert isinstance(error, DriverPermanent)
    assert "--libvirt-domain-type qemu" in error.message
    assert message in error.message


def test_message_falls_back_to_the_exception_text() -> None:
    error = map_error(FakeLibvirtError(Err.NO_DOMAIN, None), "stop abc")
    assert isinstance(error, DriverNotFound)
    assert error.message.startswith("libvirt: stop abc: ")


def test_connection_lost() -> None:
    assert is_connection_lost(FakeLibvirtError(Err.NO_CONNECT, "x"))
    assert is_connection_lost(FakeLibvirtError(Err.INVALID_CONN, "x"))
    assert is_connection_lost(FakeLibvirtError(Err.RPC, "x"))
    assert is_connection_lost(FakeLibvirtError(Err.SYSTEM_ERROR, "Cannot write", From.REMOTE))
    assert is_connection_lost(FakeLibvirtError(Err.SYSTEM_ERROR, "End of file", From.RPC))
    keepalive = "internal error: connection closed due to keepalive timeout"
    assert is_connection_lost(FakeLibvirtError(Err.INTERNAL_ERROR, keepalive, From.RPC))
    assert isinstance(map_error(FakeLibvirtError(1, keepalive, From.RPC), "x"), DriverTemporary)
    # A system error of the hypervisor itself (e.g. a file QEMU cannot open) is not.
    assert not is_connection_lost(FakeLibvirtError(Err.SYSTEM_ERROR, "cannot open", 10))
    assert not is_connection_lost(FakeLibvirtError(Err.NO_DOMAIN, "x"))


def test_unsupported() -> None:
    assert is_unsupported(FakeLibvirtError(Err.INVALID_ARG, "unsupported flags (0x14)"))
    assert is_unsupported(FakeLibvirtError(Err.NO_SUPPORT, "this function is not supported"))
    assert not is_unsupported(FakeLibvirtError(Err.OPERATION_INVALID, "not running"))


@pytest.mark.skipif(
    importlib.util.find_spec("libvirt") is None, reason="libvirt-python is not installed"
)
def test_codes_are_libvirts() -> None:
    import libvirt  # type: ignore[import-not-found,import-untyped,unused-ignore]

    for err in Err:
        assert getattr(libvirt, f"VIR_ERR_{err.name}") == err.value, err
    for source in From:
        assert getattr(libvirt, f"VIR_FROM_{source.name}") == source.value, source


def test_a_missing_libvirt_python_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bollard.agent.config import AgentConfig, AgentConfigError, make_driver
    from bollard.agent.drivers.libvirt import binding

    monkeypatch.setattr(binding, "available", lambda: False)
    cfg = AgentConfig("http://h:1", "n", tmp_path / "t", tmp_path / "s", driver="libvirt")
    with pytest.raises(AgentConfigError, match=r"needs libvirt-python.*pip install") as caught:
        make_driver(cfg)
    assert "\n" not in str(caught.value)

    def no_module(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(binding, "_module", None)
    monkeypatch.setattr(binding.importlib, "import_module", no_module)
    with pytest.raises(binding.LibvirtUnavailable, match=r"pip install 'bollard\[libvirt\]'"):
        binding.load_libvirt()
