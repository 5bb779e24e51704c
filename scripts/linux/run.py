"""``make linux``: build QEMU and the guest (once each), then boot Linux against the RTL.

    python scripts/linux/run.py [--sim verilator|icarus] [--build NAME] [--disk-mib N]
                                [--skip-setup]

Runs ``scripts/linux/build-qemu.sh`` and ``scripts/linux/guest.py`` (both do nothing when up to
date), then the cocotb test ``linux_boot`` of :mod:`tb.qemu.cocotb_linux` on the build
``--build`` (default ``virtio_blk_ep``, the product build: 64-bit BAR0, MSI-X; ``make linux``
also runs ``virtio_blk_ep_qemu``, INTx). The guest console streams through as ``guest | ...``
lines; the last line is the result::

    linux: PASS build=<build> msix=<on|off> cpus=<n> queues=<n> disk=<n>MiB requests=<n>
    mismatches=<n> cycles/request=<n> latency=<n> (median), <n> bytes written, <n> bytes
    read, fsck clean
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from model.params import VARIANTS   # noqa: E402
from tb.run import run   # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    parser.add_argument("--build", choices=sorted(VARIANTS), default="virtio_blk_ep",
                        help="the build the guest drives (default: %(default)s)")
    parser.add_argument("--disk-mib", type=int, default=64,
                        help="the disk's size (the build's capacity, as a board build sets "
                             "its RAM disk's; default: %(default)s)")
    parser.add_argument("--skip-setup", action="store_true",
                        help="do not run build-qemu.sh and guest.py")
    args = parser.parse_args()
    t0 = time.monotonic()
    if not args.skip_setup:
        subprocess.run(["sh", str(ROOT / "scripts" / "linux" / "build-qemu.sh")], check=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "linux" / "guest.py")],
                       check=True)
    t_setup = time.monotonic() - t0
    out = ROOT / "build" / "linux" / "run" / args.build
    result_file = out / "result.json"
    result_file.unlink(missing_ok=True)
    env = {
        "COSIM_QEMU": str(ROOT / "build" / "qemu" / "qemu-system-x86_64"),
        "COSIM_GUEST": str(ROOT / "build" / "linux"),
        "COSIM_OUT": str(out),
    }
    for k in ("COSIM_TIMEOUT", "COSIM_CPUS", "COSIM_QEMU_ARGS", "TLP_TRACE", "SEED"):
        if k in os.environ:
            env[k] = os.environ[k]
    # The build with the disk's size as its capacity, in build directories of its own (so
    # that make test, which CI runs beside this, keeps its own).
    capacity = args.disk_mib << 11
    env["COSIM_CAPACITY"] = str(capacity)
    tests, failed = run(args.sim, args.build, tests=["linux_boot"],
                        modules=["tb.qemu.cocotb_linux"], extra_env=env, build_tag="linux",
                        params=VARIANTS[args.build].replace(capacity=capacity),
                        params_tag=f"{args.disk_mib}mib")
    total = time.monotonic() - t0
    if not result_file.exists():
        print(f"linux: FAIL no result ({tests} tests, {failed} failed; see the log above)")
        sys.exit(1)
    r = json.loads(result_file.read_text())
    print(f"setup {t_setup:.0f} s; boot to /init {r['boot_wall_s']} s wall, "
          f"{r['boot_cycles']} cycles; workload {r['workload_wall_s']} s wall, "
          f"{r['workload_cycles']} cycles; total {total:.0f} s (seed {r['seed']})")
    for p in r["problems"]:
        print(f"  problem: {p}")
    print(r["summary"])
    sys.exit(0 if r["result"] == "PASS" and not failed else 1)


if __name__ == "__main__":
    main()
