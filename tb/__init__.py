"""cocotb testbench: the RootComplex shim, a Python virtio-pci driver and system tests."""
