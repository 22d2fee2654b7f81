#!/bin/sh
# make test-deploy: the compose stack under podman, as an operator runs it,
# tested end to end, then removed. Installs podman and its settings if
# missing (as root, as CI runs), builds the images, brings the stack up,
# runs e2e/deploy-stack.mjs (clients through each gateway, a NATS leader
# and a gateway stopped and brought back), tears everything down and checks
# nothing is left. Prints how long each phase took.
# Its own project name and host ports, so it does not meet a stack an
# operator runs with make deploy-up.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export ROOMCAST_STACK=${ROOMCAST_STACK:-roomcast-test}
export ROOMCAST_LB_PORT=${ROOMCAST_LB_PORT:-18080} ROOMCAST_DEMO_PORT=${ROOMCAST_DEMO_PORT:-18090}
export ROOMCAST_NATS_PORT_1=${ROOMCAST_NATS_PORT_1:-14222} ROOMCAST_NATS_PORT_2=${ROOMCAST_NATS_PORT_2:-14223} ROOMCAST_NATS_PORT_3=${ROOMCAST_NATS_PORT_3:-14224}

start=$(date +%s)
summary=""
timed() {
	name=$1
	shift
	t=$(date +%s)
	echo "test-deploy: $name"
	"$@"
	s=$(($(date +%s) - t))
	summary="$summary$(printf '%6s s  %s' "$s" "$name")
"
	echo "test-deploy: $name: $s s"
}

setup() { CONTAINERS_CONF=$("$here/podman-setup.sh"); export CONTAINERS_CONF; }
timed "podman and its settings" setup
"$here/stack.sh" down # an earlier run's leftovers, if any
# On failure, every container's last log lines first (CI keeps nothing else).
cleanup() {
	status=$?
	if [ "$status" != 0 ]; then
		for c in $(podman ps -a --filter "name=^${ROOMCAST_STACK}_" --format '{{.Names}}'); do
			echo "--- $c" >&2
			podman logs --tail 20 "$c" >&2 2>&1 || true
		done
	fi
	"$here/stack.sh" down
	exit "$status"
}
trap cleanup EXIT
timed "images (go build, podman build)" "$root/deploy/images/build.sh"
export ROOMCAST_IMAGES_BUILT=1
timed "stack up (NATS, stream R3, services healthy)" "$here/stack.sh" up
timed "end to end (e2e/deploy-stack.mjs)" node "$root/e2e/deploy-stack.mjs"
timed "stack down" "$here/stack.sh" down
trap - EXIT

left() {
	n=$(podman ps -a -q --filter "name=^${ROOMCAST_STACK}_" | wc -l)
	v=$(podman volume ls -q --filter "name=^${ROOMCAST_STACK}_" | wc -l)
	podman network exists "${ROOMCAST_STACK}_default" && net=1 || net=0
	if [ "$n$v$net" != 000 ]; then
		echo "test-deploy: left behind: $n containers, $v volumes, $net networks" >&2
		exit 1
	fi
}
left
printf 'test-deploy passed in %s s:\n%s' "$(($(date +%s) - start))" "$summary"
