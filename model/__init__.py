"""Golden model of the virtio-blk PCIe endpoint: plain Python, no Amaranth, no cocotb."""
