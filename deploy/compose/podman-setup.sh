#!/bin/sh
# Installs podman and the settings it needs on these machines, if missing
# (Debian, as root, as CI runs). Prints the CONTAINERS_CONF to export.
# Why each setting: docs/operations.md, "Containers".
set -eu
conf=${CONTAINERS_CONF:-/etc/containers/roomcast.conf}
missing() {
	for c in podman podman-compose runc iptables; do command -v $c >/dev/null || return 0; done
	[ -x /usr/lib/podman/netavark ] || return 0
	[ -x /usr/lib/podman/aardvark-dns ] || return 0
	return 1
}
if missing; then
	if [ "$(id -u)" != 0 ]; then
		echo "podman is missing: run this as root, or install podman podman-compose runc netavark aardvark-dns" >&2
		exit 1
	fi
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman podman-compose runc netavark aardvark-dns iptables >&2
fi
if [ ! -f "$conf" ]; then
	mkdir -p "$(dirname "$conf")"
	cat > "$conf" <<'CONF'
# roomcast's podman settings (deploy/compose/podman-setup.sh): crun fails on
# setrlimit and on cgroups in hybrid mode here, and CNI has no name
# resolution between services.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
CONF
fi
# A bridge left by CNI keeps netavark from setting up its own.
if ip link show cni-podman0 >/dev/null 2>&1; then ip link del cni-podman0; fi
echo "$conf"
