#!/bin/sh
# Builds roomcast's images locally, pulling nothing: static binaries
# (CGO_ENABLED=0) compiled here, copied onto FROM scratch.
#   localhost/roomcast:dev        roomcast, gateway, roomstate, sync, demo, probe
#   localhost/roomcast-nats:dev   nats-server at the version in cmd/roomcast/go.mod
#   localhost/roomcast-lb:dev     deploy/lb
# Usage: deploy/images/build.sh   (from anywhere; needs go and podman)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/bin/images
tag=${ROOMCAST_IMAGE_TAG:-dev}
mkdir -p "$out/empty"
cd "$root"
export CGO_ENABLED=0
build() { go build -trimpath -ldflags=-s -o "$out/$1" "$2"; }
build roomcast ./cmd/roomcast
build gateway ./services/gateway/cmd/gateway
build roomstate ./services/roomstate/cmd/roomstate
build sync ./services/sync/cmd/sync
build demo ./examples/demo
# nats-server's main package, resolved in cmd/roomcast's module: the very
# version (and dependencies) its go.mod and go.sum pin, nothing else fetched.
(cd cmd/roomcast && build nats-server github.com/nats-io/nats-server/v2)
(cd deploy/lb && GOWORK=off build lb .)
(cd deploy/probe && GOWORK=off build probe .)
for image in roomcast nats lb; do
	name=roomcast-$image
	[ "$image" = roomcast ] && name=roomcast
	podman build --quiet --pull=never --format docker -f "deploy/images/$image.Containerfile" -t "localhost/$name:$tag" "$out" >/dev/null
	echo "built localhost/$name:$tag"
done
