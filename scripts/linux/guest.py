"""Fetches the guest for ``make linux`` into build/linux, once: Debian's kernel (the ABI that
``linux-image-amd64`` currently depends on), busybox-static, e2fsck-static, and pciutils' real
``lspci`` with the shared libraries it loads and ``pci.ids``, downloaded with ``apt-get download``
(no root, nothing installed), and builds the base initramfs from them.

    python scripts/linux/guest.py [--out build/linux]

Writes ``vmlinuz``, ``initrd-base.gz`` and ``.stamp`` (the package versions); a second run with
the same versions does nothing. The per-run part of the initramfs (``/init`` and the payload)
and the disk image are made by the test itself (:mod:`tb.qemu.cocotb_linux`).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tb.qemu.guest import MODULES, base_initramfs   # noqa: E402


def kernel_package():
    """``linux-image-<abi>-amd64``, resolved from the metapackage (the ABI moves with security
    updates, so it is never hard-coded)."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise SystemExit("error: apt-cache knows no linux-image-amd64 (apt-get update?)")


def version(pkg):
    out = subprocess.run(["apt-cache", "policy", pkg], check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            return line.split()[1]
    raise SystemExit(f"error: no candidate version of {pkg}")


# `lspci -nn` in the guest (busybox has no lspci): pciutils and the run-time closure of its
# Depends in Debian 12 (pciutils -> libpci3, libkmod2; libpci3 -> libudev1, zlib1g, pci.ids;
# libkmod2 -> liblzma5, libssl3, libzstd1; all -> libc6). Of the libraries only the shared
# objects are taken, which keeps libc6's locale and gconv data out.
LSPCI_PACKAGES = ["pciutils", "libpci3", "libkmod2", "libudev1", "zlib1g", "liblzma5", "libssl3",
                  "libzstd1", "libc6", "pci.ids"]
_LSPCI_MEMBERS = re.compile(r"(usr/)?bin/lspci$|usr/share/misc/pci\.ids$|lib64/ld-linux"
                            r"|(usr/)?lib/x86_64-linux-gnu/[^/]+\.so(\.[0-9.]+)?$")


def extract(deb, dest, members):
    """The listed paths (or everything under a listed directory; or, for a compiled regular
    expression, every path it matches) of a .deb's data, without dpkg: ``dpkg-deb
    --fsys-tarfile`` gives the data tar."""
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                               capture_output=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(tar_bytes)
        f.seek(0)
        with tarfile.open(fileobj=f) as t:
            if isinstance(members, re.Pattern):
                wanted = [m for m in t.getmembers() if members.match(m.name.lstrip("./"))]
            else:
                wanted = [m for m in t.getmembers()
                          if any(m.name.lstrip("./").startswith(p) for p in members)]
            # Extraction filters came in Python 3.11.4; Debian 12 ships 3.11.2. The members are
            # from Debian's own packages, and only the listed paths are taken.
            safe = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
            t.extractall(dest, members=wanted, **safe)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "linux")
    args = parser.parse_args()
    out = args.out
    kpkg = kernel_package()
    pkgs = [kpkg, "busybox-static", "e2fsck-static"] + LSPCI_PACKAGES
    want = " ".join(f"{p}={version(p)}" for p in pkgs)
    stamp = out / ".stamp"
    if (stamp.exists() and stamp.read_text().strip() == want and
            (out / "vmlinuz").exists() and (out / "initrd-base.gz").exists()):
        print(f"guest: {out} is up to date ({want})")
        return
    debs = out / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    print(f"guest: downloading {want}")
    subprocess.run(["apt-get", "download", "-q"] + [f"{p}={version(p)}" for p in pkgs],
                   cwd=debs, check=True, stdout=subprocess.DEVNULL)
    abi = kpkg[len("linux-image-"):]
    tree = out / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    kdeb, = debs.glob(f"{kpkg}_*.deb")
    extract(kdeb, tree, [f"boot/vmlinuz-{abi}"] +
            [f"lib/modules/{abi}/kernel/{rel}" for _, rel in MODULES])
    extract(next(debs.glob("busybox-static_*.deb")), tree, ["bin/busybox"])
    extract(next(debs.glob("e2fsck-static_*.deb")), tree, ["sbin/e2fsck.static"])
    lspci = out / "lspci"
    shutil.rmtree(lspci, ignore_errors=True)
    lspci.mkdir()
    for pkg in LSPCI_PACKAGES:
        extract(next(debs.glob(f"{pkg}_*.deb")), lspci, _LSPCI_MEMBERS)
    shutil.copyfile(tree / "boot" / f"vmlinuz-{abi}", out / "vmlinuz")
    (out / "initrd-base.gz").write_bytes(base_initramfs(
        tree / "bin" / "busybox", tree / "lib" / "modules" / abi / "kernel",
        e2fsck=tree / "sbin" / "e2fsck.static", extra=lspci))
    shutil.rmtree(debs)
    stamp.write_text(want + "\n")
    print(f"guest: wrote {out / 'vmlinuz'} and {out / 'initrd-base.gz'} "
          f"({(out / 'initrd-base.gz').stat().st_size >> 10} KiB)")


if __name__ == "__main__":
    main()
