"""The tiny guest the libvirt tests boot: a Debian cloud kernel and a busybox initramfs.

Built at test time from Debian packages (``apt-get download`` + ``dpkg -x``; no root
needed for that, only apt's package lists) and cached in a directory:

- ``vmlinuz``: from the newest available ``linux-image-<version>-cloud-amd64``;
- ``initrd.gz``: busybox-static plus the ``evdev`` and ``button`` modules of that same
  kernel (with their dependencies), under ``/lib/modules/<the guest kernel's release>``. Its
  ``/init`` mounts proc/sys/dev, loads the modules, starts ``busybox acpid`` (the ACPI power
  button runs ``poweroff -f``, so ``virDomainShutdown`` works) and prints
  ``bollard-guest counter N`` on the console every second (``N`` = 1, 2, ...; a
  ``bollard-guest boot`` line comes first, once per boot);
- ``guest.json``: versions, sizes and a digest of the init script; a cached build is used
  as is when its files still have the recorded sizes and the init script is unchanged.

Concurrent builders of the same directory serialise on ``<dir>/.lock``; outputs are written
under temporary names and renamed, ``guest.json`` last.

Command line: ``python -m tests.support.libvirt_guest OUT_DIR`` (scripts/libvirt/build-guest.sh).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Versioned kernel packages only: "linux-image-6.1.0-56-cloud-amd64",
# "linux-image-6.12.117+deb12-cloud-amd64"; not the "linux-image-6.12-cloud-amd64" metapackage.
KERNEL_PACKAGE = re.compile(r"^linux-image-\d+\.\d+\.\d+[-+][^ ]*-cloud-amd64$")
MODULES = ("evdev", "button")
COUNTER_PREFIX = "bollard-guest counter "
BOOT_PREFIX = "bollard-guest boot "

INIT = """\
#!/bin/busybox sh
# bollard tiny guest: modules, acpid (power button -> poweroff -f), a counter on the console.
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin /var/log /var/run
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
release=$(uname -r)
echo "bollard-guest boot $release"
for m in $(cat /etc/modules.load); do
    insmod "/lib/modules/$release/$m" || echo "bollard-guest insmod $m failed"
done
acpid -c /etc/acpi -l /var/log/acpid.log -p /var/run/acpid.pid || echo "bollard-guest acpid failed"
i=0
while :; do
    i=$((i + 1))
    echo "bollard-guest counter $i"
    sleep 1
done
"""

POWER_BUTTON = "#!/bin/sh\nexec poweroff -f\n"


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path
    info: dict[str, Any]


class GuestBuildError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GuestBuildError(f"{' '.join(cmd)} failed ({done.returncode}): {last[0]}")
    return done.stdout


def _candidates(packages: list[str]) -> dict[str, str]:
    """apt's candidate version of each package that has one (one ``apt-cache policy`` call)."""
    if not packages:
        return {}
    out = _run(["apt-cache", "policy", *packages])
    found = re.findall(r"^(\S+):\n\s*Installed:.*\n\s*Candidate:\s*(\S+)", out, re.M)
    return {name: version for name, version in found if version != "(none)"}


def _version_newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0


def newest_kernel_package() -> tuple[str, str]:
    """(package, version) of the newest installable versioned cloud kernel package."""
    names = [
        n
        for n in _run(["apt-cache", "pkgnames", "linux-image-"]).split()
        if KERNEL_PACKAGE.match(n)
    ]
    best: tuple[str, str] | None = None
    for name, version in sorted(_candidates(names).items()):
        if best is None or _version_newer(version, best[1]):
            best = (name, version)
    if best is None:
        raise GuestBuildError("apt knows no installable linux-image-*-cloud-amd64 package")
    return best


def _download(packages: list[str], into: Path) -> list[Path]:
    """``apt-get download`` each package (name=version) into ``into``; the .deb paths."""
    _run(["apt-get", "-q", "download", *packages], cwd=into)
    debs = []
    for spec in packages:
        name = spec.split("=", 1)[0]
        found = sorted(into.glob(f"{name}_*.deb"))
        if not found:
            raise GuestBuildError(f"apt-get download left no .deb for {name}")
        debs.append(found[-1])
    return debs


def _read_module(path: Path) -> bytes:
    name = path.name
    if name.endswith(".ko"):
        return path.read_bytes()
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        if shutil.which("zstd") is None:
            raise GuestBuildError(f"{name} is zstd-compressed and no zstd tool is installed")
        return subprocess.run(
            ["zstd", "-dc", str(path)], check=True, capture_output=True, timeout=60
        ).stdout
    raise GuestBuildError(f"unknown module format: {name}")


def _module_depends(data: bytes) -> list[str]:
    """The ``depends=`` entry of a module's .modinfo section (NUL-separated key=value)."""
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if match is None or not match.group(1):
        return []
    return [d.decode() for d in match.group(1).split(b",") if d]


def _collect_modules(moddir: Path, wanted: tuple[str, ...]) -> tuple[dict[str, bytes], list[str]]:
    """Decompressed modules to load, in load order (dependencies first), and the wanted
    modules that are built into the kernel instead."""
    index: dict[str, Path] = {}
    for path in (moddir / "kernel").rglob("*.ko*"):
        index[path.name.split(".ko", 1)[0].replace("-", "_")] = path
    builtin_file = moddir / "modules.builtin"
    builtin = {
        Path(line).name.split(".ko", 1)[0].replace("-", "_")
        for line in (builtin_file.read_text().split() if builtin_file.exists() else [])
    }
    ordered: dict[str, bytes] = {}
    builtins: list[str] = []

    def add(name: str, chain: tuple[str, ...]) -> None:
        key = name.replace("-", "_")
        if key in ordered or key in chain:
            return
        if key in builtin:
            builtins.append(key)
            return
        if key not in index:
            raise GuestBuildError(f"kernel module {name} is in neither the package nor built in")
        data = _read_module(index[key])
        for dep in _module_depends(data):
            add(dep, (*chain, key))
        ordered[key] = data

    for name in wanted:
        add(name, ())
    return ordered, builtins


def _write_cpio_gz(root: Path, target: Path) -> None:
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join([".", *files]) + "\n"
    cpio = subprocess.run(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
        cwd=root,
        input=listing.encode(),
        capture_output=True,
        timeout=120,
    )
    if cpio.returncode != 0:
        raise GuestBuildError(f"cpio failed: {cpio.stderr.decode(errors='replace').strip()}")
    with gzip.open(target, "wb", compresslevel=6) as out:
        out.write(cpio.stdout)


def _init_digest() -> str:
    return hashlib.sha256((INIT + POWER_BUTTON + ",".join(MODULES)).encode()).hexdigest()


def cached_guest(out_dir: Path) -> Guest | None:
    """The guest in ``out_dir`` when it is complete and built by this version of the builder."""
    try:
        info = json.loads((out_dir / "guest.json").read_text())
        kernel, initrd = out_dir / "vmlinuz", out_dir / "initrd.gz"
        valid = (
            info.get("init_sha256") == _init_digest()
            and kernel.stat().st_size == info["vmlinuz_size"]
            and initrd.stat().st_size == info["initrd_size"]
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return Guest(kernel, initrd, info) if valid else None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another process builds
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_guest(out_dir: Path) -> Guest:
    """The cached guest in ``out_dir``, built first when missing or stale."""
    out_dir.mkdir(parents=True, exist_ok=True)
    guest = cached_guest(out_dir)
    if guest is not None:
        return guest
    with _locked(out_dir / ".lock"):
        guest = cached_guest(out_dir)  # another process may have built it meanwhile
        if guest is not None:
            return guest
        with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp:
            return _build(out_dir, Path(tmp))


def _fetch(work: Path) -> tuple[str, str, str, Path, Path]:
    """Pick the kernel and busybox-static and download both into ``work``."""
    kernel_pkg, kernel_version = newest_kernel_package()
    busybox_version = _candidates(["busybox-static"]).get("busybox-static")
    if busybox_version is None:
        raise GuestBuildError("apt has no candidate for busybox-static")
    kernel_deb, busybox_deb = _download(
        [f"{kernel_pkg}={kernel_version}", f"busybox-static={busybox_version}"], work
    )
    return kernel_pkg, kernel_version, busybox_version, kernel_deb, busybox_deb


def _build(out_dir: Path, work: Path) -> Guest:
    try:
        fetched = _fetch(work)
    except GuestBuildError:
        if os.geteuid() != 0:
            raise
        # Empty or stale package lists (a version the mirror no longer has): refresh once.
        _run(["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "update"])
        fetched = _fetch(work)
    kernel_pkg, kernel_version, busybox_version, kernel_deb, busybox_deb = fetched
    _run(["dpkg-deb", "-x", str(kernel_deb), str(work / "kernel")])
    _run(["dpkg-deb", "-x", str(busybox_deb), str(work / "busybox")])

    vmlinuz = sorted((work / "kernel" / "boot").glob("vmlinuz-*"))
    moddirs = sorted((work / "kernel" / "lib" / "modules").glob("*"))
    if len(vmlinuz) != 1 or len(moddirs) != 1:
        raise GuestBuildError(f"{kernel_deb.name}: expected one vmlinuz and one module dir")
    release = vmlinuz[0].name.removeprefix("vmlinuz-")
    if moddirs[0].name != release:
        raise GuestBuildError(f"{kernel_deb.name}: modules for {moddirs[0].name}, not {release}")
    modules, builtins = _collect_modules(moddirs[0], MODULES)

    root = work / "initramfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(work / "busybox" / "bin" / "busybox", root / "bin" / "busybox")
    for sub in ("proc", "sys", "dev", "etc/acpi/PWRF", f"lib/modules/{release}"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, data in modules.items():
        (root / "lib" / "modules" / release / f"{name}.ko").write_bytes(data)
    (root / "etc" / "modules.load").write_text("".join(f"{n}.ko\n" for n in modules))
    (root / "etc" / "acpi" / "PWRF" / "00000080").write_text(POWER_BUTTON)
    (root / "init").write_text(INIT)
    for executable in (root / "init", root / "etc" / "acpi" / "PWRF" / "00000080"):
        executable.chmod(0o755)

    kernel_tmp, initrd_tmp = work / "vmlinuz", work / "initrd.gz"
    shutil.copyfile(vmlinuz[0], kernel_tmp)
    _write_cpio_gz(root, initrd_tmp)
    info: dict[str, Any] = {
        "kernel_package": kernel_pkg,
        "kernel_version": kernel_version,
        "kernel_release": release,
        "busybox_version": busybox_version,
        "modules": list(modules),
        "builtin_modules": builtins,
        "vmlinuz_size": kernel_tmp.stat().st_size,
        "initrd_size": initrd_tmp.stat().st_size,
        "init_sha256": _init_digest(),
    }
    os.replace(kernel_tmp, out_dir / "vmlinuz")
    os.replace(initrd_tmp, out_dir / "initrd.gz")
    info_tmp = work / "guest.json"
    info_tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(info_tmp, out_dir / "guest.json")
    return Guest(out_dir / "vmlinuz", out_dir / "initrd.gz", info)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.libvirt_guest OUT_DIR", file=sys.stderr)
        return 2
    try:
        guest = build_guest(Path(argv[0]))
    except (GuestBuildError, OSError, subprocess.SubprocessError) as exc:
        print(f"build-guest: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(guest.info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
