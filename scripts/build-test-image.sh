#!/usr/bin/env bash
# Build the Debian 12 systemd image the test and demo hosts run (no registry can be pulled here):
# debootstrap a minimal root filesystem, then `podman import` it. The tag is a hash of this script,
# so the image is rebuilt only when the recipe changes. Prints the image reference on stdout.
set -euo pipefail

suite=bookworm
packages=systemd,systemd-sysv,python3,python3-apt,dbus,sudo,iproute2,procps,ca-certificates
mirror=${LLMRIG_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "deb" && $3 ~ /^(bookworm|noble|jammy)$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

recipe_hash=$(sha256sum "$0" | cut -c1-12)
image="localhost/llmrig-debian12:${recipe_hash}"

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

rootfs=$(mktemp -d /var/tmp/llmrig-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "building $image from $mirror (debootstrap, about a minute)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2
# the container's apt uses the same mirror, with the main and non-free components
cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main non-free non-free-firmware
deb $mirror $suite-updates main non-free non-free-firmware
SOURCES
rm -f "$rootfs"/etc/machine-id && touch "$rootfs"/etc/machine-id
tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >&2
echo "$image"
