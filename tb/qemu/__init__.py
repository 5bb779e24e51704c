"""QEMU co-simulation: a stock Linux guest in QEMU 7.2 drives the RTL through QEMU's
multi-process proxy device (``x-pci-proxy-dev``), with the cocotb testbench as the remote.

* :mod:`tb.qemu.protocol`: the wire format of QEMU's ``mpqemu`` messages;
* :mod:`tb.qemu.guest_ram`: the guest RAM QEMU shares as memory-backend fds;
* :mod:`tb.qemu.remote`: the bridge that turns messages into TLPs and serves the DUT's DMA;
* :mod:`tb.qemu.guest`: the guest's initramfs, the disk image and the host-side checks;
* :mod:`tb.qemu.cocotb_linux`: the cocotb test that runs it all (``make linux``).
"""
