#!/bin/sh
# The compose stack's lifecycle under podman, as an operator runs it
# (docs/operations.md walks through it):
#   stack.sh up      build the images, write .env once (random secrets), start
#                    NATS, ensure stream ROOMS and the buckets at 3 replicas
#                    (as admin), start the services, wait until all are healthy
#   stack.sh down    remove the containers, the network and the volumes
#   stack.sh wait    wait until every container's health check passes
# ROOMCAST_STACK names the project (default roomcast); ROOMCAST_LB_PORT,
# ROOMCAST_DEMO_PORT and ROOMCAST_NATS_PORT_{1,2,3} move the host ports.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
project=${ROOMCAST_STACK:-roomcast}
CONTAINERS_CONF=${CONTAINERS_CONF:-$("$here/podman-setup.sh")}
export CONTAINERS_CONF

# podman-compose's own output (and podman's complaints about systemd timers
# for health checks on machines without systemd) goes to a log, shown when
# something fails.
log=${TMPDIR:-/tmp}/roomcast-stack-$project.log
compose() {
	if ! podman-compose --no-ansi -p "$project" -f "$here/compose.yaml" "$@" >>"$log" 2>&1; then
		tail -n 30 "$log" >&2
		return 1
	fi
}

# healthy waits for a container's health check (the image's: /readyz) to
# pass. Podman schedules checks with systemd timers; without systemd they
# never run by themselves, so this runs them.
healthy() {
	deadline=$(($(date +%s) + ${2:-90}))
	until podman healthcheck run "$1" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "$1 is not healthy; its log:" >&2
			podman logs --tail 30 "$1" >&2 || true
			return 1
		fi
		sleep 1
	done
}

services="gateway-1 gateway-2 roomstate-1 roomstate-2 sync-1 sync-2 demo lb"

case ${1:-} in
up)
	# ROOMCAST_IMAGES_BUILT=1: the images are there already (test.sh times
	# the build on its own).
	[ "${ROOMCAST_IMAGES_BUILT:-}" = 1 ] || "$here/../images/build.sh"
	if [ ! -f "$here/.env" ]; then
		umask 077
		{
			echo "# Written by stack.sh: this stack's secrets (example.env says what each is)."
			echo "ROOMCAST_JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
			echo "ROOMCAST_ALLOWED_ORIGINS=http://localhost:3000"
			for role in ADMIN GATEWAY ROOMSTATE SYNC SERVICE SYS; do
				echo "ROOMCAST_${role}_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
			done
		} > "$here/.env"
	fi
	compose up -d nats-1 nats-2 nats-3
	for n in 1 2 3; do healthy "${project}_nats-${n}_1"; done
	# Stream ROOMS and the buckets, R3, as admin: once, and again after
	# changing replicas or max age. Retried while the cluster elects its
	# JetStream leader.
	admin=$(sed -n 's/^ROOMCAST_ADMIN_PASSWORD=//p' "$here/.env")
	url="nats://admin:$admin@nats-1:4222,nats://admin:$admin@nats-2:4222,nats://admin:$admin@nats-3:4222"
	deadline=$(($(date +%s) + 60))
	until podman run --rm --read-only --no-healthcheck --network "${project}_default" "localhost/roomcast:${ROOMCAST_IMAGE_TAG:-dev}" \
		/bin/roomcast streams ensure --replicas 3 --timeout 10s --nats-url "$url" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "roomcast streams ensure failed for 60 s" >&2
			exit 1
		fi
		sleep 1
	done
	compose up -d $services
	for s in $services; do healthy "${project}_${s}_1"; done
	echo "roomcast is up: sockets http://127.0.0.1:${ROOMCAST_LB_PORT:-8080}/socket.io/, demo API http://127.0.0.1:${ROOMCAST_DEMO_PORT:-8090}/api/config"
	;;
wait)
	for s in nats-1 nats-2 nats-3 $services; do healthy "${project}_${s}_1"; done
	;;
down)
	# What podman-compose down -v does, at once rather than one container
	# after the other, and the network it leaves behind.
	# A container that stops on its own just as its 2 s are up makes
	# podman's SIGKILL fail ("container state improper: stopped") and the
	# rm with it (CI saw roomstate take 2 s once its NATS was gone): the
	# rm is tried again on what is left.
	rm_stack() {
		ids=$(podman ps -aq --filter "name=^${project}_")
		[ -z "$ids" ] || podman rm -f -t 2 $ids >/dev/null 2>>"$log"
	}
	rm_stack || { sleep 1; rm_stack; }
	for v in nats-1 nats-2 nats-3; do
		! podman volume exists "${project}_$v" || podman volume rm -f "${project}_$v" >/dev/null
	done
	! podman network exists "${project}_default" || podman network rm -f "${project}_default" >/dev/null
	;;
*)
	echo "usage: $0 up|down|wait" >&2
	exit 2
	;;
esac
