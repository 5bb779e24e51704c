"""Adapters between PCIe hard blocks and the PHY-agnostic TLP streams of :mod:`rtl.tlp`.

:mod:`rtl.phy.s7_axis` speaks the AXI4-Stream user interface of the Xilinx 7-series
integrated block for PCI Express (``pcie_7x``, PG054); :mod:`rtl.phy.s7_cfg` names the block's
``cfg_*`` outputs a function behind it takes.
"""

from .s7_axis import (S7RxTuser, S7TxTuser, S7RxMeta, S7AxisSignature, S7AxisRx, S7AxisTx,
                      S7_DATA_WIDTHS)
from .s7_cfg import S7ConfigSignature


__all__ = ["S7RxTuser", "S7TxTuser", "S7RxMeta", "S7AxisSignature", "S7AxisRx", "S7AxisTx",
           "S7_DATA_WIDTHS", "S7ConfigSignature"]
