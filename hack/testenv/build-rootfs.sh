#!/usr/bin/env bash
# Builds, without a container registry, the base images the project's Dockerfile takes as build
# arguments (BUILD_BASE, BASE), as root filesystem tarballs cached in $MPAAS_CACHE:
#   base.tar   Debian minbase + python3 (the runtime stage)
#   build.tar  base + a C compiler, python3-dev and venv (the build stage compiles the hot path)
# Both come from debootstrap and the Debian mirror apt already uses.
source "$(dirname "$0")/lib.sh"
out="$MPAAS_CACHE/rootfs-$DEBIAN_SUITE-$ROOTFS_REVISION"
[[ -f $out/base.tar && -f $out/build.tar ]] && { log "root filesystems cached in $out"; exit 0; }
[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
cleanup() {
  # debootstrap mounts /proc and /sys into the tree; never leave them behind.
  grep -F " $work/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/rootfs"
log "debootstrap $DEBIAN_SUITE (minbase) from $mirror"
debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive bash -c "$1"; }
pack() { (cd "$root" && tar --numeric-owner --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -cf "$1" .); }
in_root 'apt-get install -y -q --no-install-recommends python3 ca-certificates >/dev/null'
in_root 'apt-get clean && rm -rf /var/lib/apt/lists/*'
rm -f "$root/etc/resolv.conf"
mkdir -p "$out.tmp"
pack "$out.tmp/base.tar"
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root 'apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends gcc libc6-dev python3-dev python3-venv >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*'
rm -f "$root/etc/resolv.conf"
pack "$out.tmp/build.tar"
rm -rf "$out"; mv "$out.tmp" "$out"
log "root filesystems built into $out ($(du -sh "$out" | cut -f1))"
