# Ref: RHS Research NiteFury-II (XC7A200T-2FBG484E, Vivado part xc7a200tfbg484-2), M.2 M-key, PCIe x4
#
# Board constraints for the PCIe link of the virtio-blk endpoint on the NiteFury-II: the
# LiteFury's pins, since [RHS]'s Nitefury-II project has the same early.xdc and normal.xdc as
# its LiteFury project, pin for pin (XC7A200T in FBG484 there, XC7A100T in FGG484).
#
# Sources (public; every pin below appears in the first one):
#   [RHS]   github.com/RHSResearchLLC/NiteFury-and-LiteFury, commit 6d1b851,
#           Sample-Projects/Project-0/FPGA/Nitefury-II/project/project.srcs/constrs_1/imports/
#           constraints/early.xdc (PCIe lanes, refclk, CLKREQ#, PERST# as "pci_reset") and
#           .../constraints/normal.xdc (false path on PERST#, configuration settings).
#           The part and the x4 / 5.0 GT/s / 100 MHz / PCIE_X0Y0 settings are from the same
#           project's project.xpr and Top_xdma_0_0.xci; the FPGA name from the repository README.
#   [LiteX] github.com/litex-hub/litex-boards, litex_boards/platforms/sqrl_acorn.py (the Acorn
#           CLE-101 is the LiteFury's twin): the same pins, and PULLUP on PERST#.
#   [amaranth-boards] amaranth_boards/nitefury.py (NitefuryIIPlatform): the same PCIe and LED
#           pins.
#
# The ports are those of rtl.board.S7BoardTop (make board BOARD=nitefury); tests/test_board.py
# checks that every port of that top has a pin here and every port named here is one of its.
#   [RHS normal.xdc] also gives the four user LEDs (active low, CodeBlinker.v: LED_ON = 1'b0).

###############################################################################
# PCIe reference clock: 100 MHz HCSL from the M.2 connector, into MGTREFCLK of the GTP quad.
# It needs an IBUFDS_GTE2 in the wrapper; GT reference clock pins take no IOSTANDARD.
###############################################################################
set_property PACKAGE_PIN F6 [get_ports pcie_refclk_p]
set_property PACKAGE_PIN E6 [get_ports pcie_refclk_n]
create_clock -name pcie_refclk -period 10.000 [get_ports pcie_refclk_p]

###############################################################################
# PERST# (active low, from the host; [RHS] calls it pci_reset and feeds XDMA's sys_rst_n).
# It is asynchronous: the wrapper resynchronises it, so it gets no timing path [RHS normal.xdc].
###############################################################################
set_property PACKAGE_PIN J1 [get_ports pcie_perst_n]
set_property IOSTANDARD LVCMOS33 [get_ports pcie_perst_n]
set_property PULLUP true [get_ports pcie_perst_n]
set_false_path -from [get_ports pcie_perst_n]

# CLKREQ# (active low, open drain towards the host) [RHS: pcie_clkreq_l].
set_property PACKAGE_PIN G1 [get_ports pcie_clkreq_n]
set_property IOSTANDARD LVCMOS33 [get_ports pcie_clkreq_n]

###############################################################################
# PCIe lanes 0-3 (GTP transceivers; no IOSTANDARD). Index = PCIe lane number at the connector.
###############################################################################
set_property PACKAGE_PIN B10 [get_ports {pcie_rx_p[0]}]
set_property PACKAGE_PIN A10 [get_ports {pcie_rx_n[0]}]
set_property PACKAGE_PIN B6  [get_ports {pcie_tx_p[0]}]
set_property PACKAGE_PIN A6  [get_ports {pcie_tx_n[0]}]

set_property PACKAGE_PIN B8  [get_ports {pcie_rx_p[1]}]
set_property PACKAGE_PIN A8  [get_ports {pcie_rx_n[1]}]
set_property PACKAGE_PIN B4  [get_ports {pcie_tx_p[1]}]
set_property PACKAGE_PIN A4  [get_ports {pcie_tx_n[1]}]

set_property PACKAGE_PIN D11 [get_ports {pcie_rx_p[2]}]
set_property PACKAGE_PIN C11 [get_ports {pcie_rx_n[2]}]
set_property PACKAGE_PIN D5  [get_ports {pcie_tx_p[2]}]
set_property PACKAGE_PIN C5  [get_ports {pcie_tx_n[2]}]

set_property PACKAGE_PIN D9  [get_ports {pcie_rx_p[3]}]
set_property PACKAGE_PIN C9  [get_ports {pcie_rx_n[3]}]
set_property PACKAGE_PIN D7  [get_ports {pcie_tx_p[3]}]
set_property PACKAGE_PIN C7  [get_ports {pcie_tx_n[3]}]

# The board's lane order is not the one Xilinx's PCIe IP assumes (lane 0 on GTPE2_CHANNEL_X0Y7
# down to lane 3 on X0Y4). [RHS] places the GT channel of each PIPE lane explicitly (early.xdc):
#   PIPE lane 0 -> GTPE2_CHANNEL_X0Y6    PIPE lane 1 -> GTPE2_CHANNEL_X0Y4
#   PIPE lane 2 -> GTPE2_CHANNEL_X0Y5    PIPE lane 3 -> GTPE2_CHANNEL_X0Y7
# with the hard block at PCIE_X0Y0. Those LOCs name cells inside the pcie_7x IP, so the board
# build's build.tcl sets them after synthesis (rtl.board.Board.gt_locs), replacing the IP's own.

###############################################################################
# User LEDs A1..A4 [RHS normal.xdc], active low: led[0] link up, led[1] Bus Master Enable,
# led[2] MSI-X enabled, led[3] TLP activity (rtl.board.S7BoardTop).
###############################################################################
set_property PACKAGE_PIN G3 [get_ports {led[0]}]
set_property PACKAGE_PIN H3 [get_ports {led[1]}]
set_property PACKAGE_PIN G4 [get_ports {led[2]}]
set_property PACKAGE_PIN H4 [get_ports {led[3]}]
set_property IOSTANDARD LVCMOS33 [get_ports {led[*]}]
set_property DRIVE 8 [get_ports {led[*]}]
set_false_path -to [get_ports {led[*]}]

###############################################################################
# Configuration [RHS normal.xdc]: 3.3 V bank 0, fast quad-SPI load so the FPGA is configured
# before the root complex starts link training.
###############################################################################
set_property CFGBVS VCCO [current_design]
set_property CONFIG_VOLTAGE 3.3 [current_design]
set_property CONFIG_MODE SPIx4 [current_design]
set_property BITSTREAM.CONFIG.SPI_BUSWIDTH 4 [current_design]
set_property BITSTREAM.CONFIG.EXTMASTERCCLK_EN Div-1 [current_design]
set_property BITSTREAM.CONFIG.SPI_FALL_EDGE YES [current_design]
set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]
