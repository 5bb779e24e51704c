"""Generate Verilog for the endpoint: ``python -m rtl.build --out build/verilog``."""

import argparse
import os

from amaranth.back import verilog

from model.params import DeviceParams
from .top import VirtioBlkEndpoint


__all__ = ["VARIANTS", "generate"]


# The default build, and the one QEMU's proxy device needs: a 32-bit BAR0 (it sizes BARs one
# register at a time) and no MSI-X (only guest RAM is shared, so MSI-X writes cannot land).
VARIANTS = {
    "virtio_blk_ep":      DeviceParams(),
    "virtio_blk_ep_qemu": DeviceParams(bar0_64bit=False, msix=False),
}


def generate(name, params, out_dir):
    """Write ``<out_dir>/<name>.v`` with a top module called ``name``; returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    top = VirtioBlkEndpoint(params)
    text = verilog.convert(top, name=name, emit_src=False)
    path = os.path.join(out_dir, f"{name}.v")
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="build/verilog")
    parser.add_argument("--variant", choices=sorted(VARIANTS), action="append")
    args = parser.parse_args()
    for name in args.variant or sorted(VARIANTS):
        print(f"verilog: {generate(name, VARIANTS[name], args.out)}")


if __name__ == "__main__":
    main()
