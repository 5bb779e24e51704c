"""Amaranth gateware of the virtio-blk PCIe endpoint."""
