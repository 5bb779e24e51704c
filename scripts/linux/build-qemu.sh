#!/bin/sh
# Builds QEMU 7.2 (Debian bookworm's source package) with the multi-process proxy device and
# patches/qemu-7.2-*.patch (in name order: INTx under TCG; MSI/MSI-X and 64-bit BARs) into
# build/qemu/qemu-system-x86_64, once: the stamp build/qemu/.stamp holds the patches' sha256
# and the source version; a second run with the same patches does nothing. See
# docs/qemu-cosim-notes.md sections 1 and 4.
#
#   scripts/linux/build-qemu.sh            (JOBS=<n> for ninja, default 2)
#
# As root with apt-get, missing build dependencies and the deb-src entry are added; otherwise
# the commands are printed and the script fails.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build/qemu
patches=$(ls "$root"/patches/qemu-7.2-*.patch | sort)
jobs=${JOBS:-2}
mkdir -p "$out"
# shellcheck disable=SC2086
want="$(cat $patches | sha256sum | cut -d' ' -f1) qemu-7.2"

if [ -x "$out/qemu-system-x86_64" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$want" ]; then
	echo "build-qemu: $out/qemu-system-x86_64 is up to date"
	exit 0
fi

as_root() {  # as_root <command...>: run it as root, or print it and fail
	if [ "$(id -u)" = 0 ]; then
		"$@"
	else
		echo "error: needs root: $*"
		exit 1
	fi
}

# -- build dependencies (libfdt-dev is needed even for x86_64-softmmu, for microvm) -----------
# Runtime firmware: seabios (bios-256k.bin), qemu-system-data (linuxboot_dma.bin, kvmvapic.bin).
# libc6-dev: libc.a, for the guest's static blkzero (tb/qemu/blkzero.c).
missing=""
for pkg in meson ninja-build pkg-config gcc libc6-dev libglib2.0-dev libpixman-1-dev libfdt-dev \
	   seabios qemu-system-data dpkg-dev; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $pkg"
done
if [ -n "$missing" ]; then
	echo "build-qemu: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -qq
	# shellcheck disable=SC2086
	as_root apt-get install -y -qq --no-install-recommends $missing
fi

# -- the source: Debian's qemu 7.2 with Debian's patches applied ----------------------------
src=$out/src
if [ ! -d "$src/qemu-7.2+dfsg" ]; then
	if ! apt-get source --print-uris qemu >/dev/null 2>&1 ||
	   [ -z "$(apt-get source --print-uris qemu 2>/dev/null | grep -F .dsc)" ]; then
		# No deb-src entry: add one mirroring the binary sources (deb822 format, Debian 12).
		list=/etc/apt/sources.list.d/debian.sources
		[ -f "$list" ] || { echo "error: no $list to derive a deb-src entry from"; exit 1; }
		echo "build-qemu: adding deb-src sources"
		sed 's/^Types: deb$/Types: deb-src/' "$list" > /tmp/debian-src.sources.$$
		as_root cp /tmp/debian-src.sources.$$ /etc/apt/sources.list.d/debian-src.sources
		rm -f /tmp/debian-src.sources.$$
		as_root apt-get update -qq
	fi
	mkdir -p "$src"
	(cd "$src" && apt-get source --download-only qemu >/dev/null 2>&1 &&
	 dpkg-source -x "$(ls qemu_7.2+dfsg-*.dsc | tail -n 1)" qemu-7.2+dfsg >/dev/null)
	[ -d "$src/qemu-7.2+dfsg" ] || { echo "error: apt-get source qemu gave no qemu 7.2"; exit 1; }
fi
tree=$src/qemu-7.2+dfsg
# The patches applied to the tree are kept in .cosim-patches (an older tree has the one patch
# of the time in .cosim-patched); when they differ from ours they come off, newest first, and
# ours go on, in order.
applied=$tree/.cosim-patches
if [ -f "$tree/.cosim-patched" ]; then
	mkdir -p "$applied"
	mv "$tree/.cosim-patched" "$applied/qemu-7.2-proxy-intx-tcg.patch"
fi
# shellcheck disable=SC2086
if [ ! -d "$applied" ] || [ "$(cat "$applied"/*.patch 2>/dev/null | sha256sum)" != \
		"$(cat $patches | sha256sum)" ]; then
	if [ -d "$applied" ]; then
		echo "build-qemu: the patches changed; taking the old ones off"
		for p in $(ls "$applied"/*.patch | sort -r); do
			(cd "$tree" && patch -p1 -R < "$p")
		done
	fi
	rm -rf "$applied"
	mkdir -p "$applied"
	for p in $patches; do
		(cd "$tree" && patch -p1 --forward < "$p")
		cp "$p" "$applied/"
	done
fi

# -- configure (KVM must be on: hw/remote/Kconfig has MULTIPROCESS depend on it) and build ---
if [ ! -f "$tree/build/build.ninja" ]; then
	mkdir -p "$tree/build"
	(cd "$tree/build" && ../configure --target-list=x86_64-softmmu --without-default-features \
		--enable-kvm --enable-multiprocess --enable-fdt=system \
		--disable-docs --disable-werror --disable-install-blobs --disable-debug-info \
		--firmwarepath=/usr/share/qemu:/usr/share/seabios > "$out/configure.log" 2>&1) || {
		echo "error: configure failed, see $out/configure.log"; exit 1; }
fi
echo "build-qemu: building qemu-system-x86_64 (ninja -j$jobs, a few minutes once)"
(cd "$tree/build" && nice -n 10 ninja -j"$jobs" qemu-system-x86_64 > "$out/build.log" 2>&1) || {
	tail -n 30 "$out/build.log"; echo "error: build failed, see $out/build.log"; exit 1; }
"$tree/build/qemu-system-x86_64" -device help 2>/dev/null | grep -q x-pci-proxy-dev || {
	echo "error: the build has no x-pci-proxy-dev (multiprocess off?)"; exit 1; }
cp "$tree/build/qemu-system-x86_64" "$out/qemu-system-x86_64"
echo "$want" > "$out/.stamp"
echo "build-qemu: built $out/qemu-system-x86_64"
