#!/bin/sh
# Installs the Debian packages the project needs and the machine lacks, checking each need by
# what it is for (not by package name, so a pyenv Python or a hand-built Icarus also counts).
# As root with apt-get, missing ones are installed; otherwise the apt-get line is printed and
# the script fails.
#
#   scripts/system-deps.sh <python>        before the venv exists
#   scripts/system-deps.sh <python> <venv> after: also checks cocotb finds libpython
set -eu
python=$1
venv=${2:-}
missing=""

need() {  # need <package> <check command...>
	pkg=$1; shift
	if ! "$@" >/dev/null 2>&1; then missing="$missing $pkg"; fi
}

need python3-venv  "$python" -c "import ensurepip, venv"
need iverilog      sh -c "command -v iverilog && iverilog -V"
# Verilator: a perl script driving a C++ compiler and make.
need g++           sh -c "command -v g++"
need make          sh -c "command -v make"
need perl          perl -MPod::Usage -MGetopt::Long -e 1
# Verilator's FST wave writer (WAVES=1) compiles against zlib and lz4.
need zlib1g-dev    test -f /usr/include/zlib.h
need liblz4-dev    test -f /usr/include/lz4.h
# tests/test_board.py runs make board's Vivado script through tclsh, Vivado's commands stubbed.
need tcl           sh -c "command -v tclsh"
if [ -n "$venv" ]; then
	# cocotb embeds Python in the simulator through the shared libpython.
	need libpython3.11 "$venv/bin/cocotb-config" --libpython
fi

[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "installing with apt-get:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing
else
	echo "error: missing system packages. Install them with:"
	echo "    sudo apt-get update && sudo apt-get install$missing"
	exit 1
fi
