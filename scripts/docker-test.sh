#!/usr/bin/env bash
# `make docker-test`: build Parley's image on a local Debian base, run it, wait for /healthz, chat once through the
# API, restart it in the middle of that conversation (its KV state kept on the volume), print the image size and the time to become healthy, and remove the container and its volume.
#
# Needs root (or sudo) the first time: it installs Debian's docker.io and debootstrap when they are missing and starts
# dockerd when no engine answers. Docker Hub is not needed: the base image is made with debootstrap and
# `docker import`, and kept as $BASE_TAG for the next run (DOCKER_TEST_NEW_BASE=1 makes it again).
#
# Settings (environment):
#   BASE_IMAGE       use this base instead of making one (e.g. python:3.11-slim-bookworm where Docker Hub is reachable)
#   BASE_TAG         tag of the debootstrap base (parley-base:bookworm)
#   IMAGE            tag of the image built (parley:docker-test)
#   CA_BUNDLE        CA bundle passed to the build as the `ca` secret (/etc/ssl/certs/ca-certificates.crt if it exists;
#                    empty: no secret)
#   DEBIAN_MIRROR    mirror for debootstrap (http://deb.debian.org/debian)
#   HEALTH_TIMEOUT   seconds to wait for /healthz (240)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_TAG=${BASE_TAG:-parley-base:bookworm}
IMAGE=${IMAGE:-parley:docker-test}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-240}
if [ -z "${CA_BUNDLE+set}" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi
CA_BUNDLE=${CA_BUNDLE:-}
NAME=parley-docker-test-$$
VOLUME=$NAME-data
API_KEY=docker-test-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

log() { printf '\n== %s\n' "$*"; }
die() { printf 'docker-test: %s\n' "$*" >&2; exit 1; }

apt_install() {
    log "installing Debian's $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- an engine ---------------------------------------------------------------------------------------------------
STARTED_DOCKERD=
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io
fi
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /tmp/parley-dockerd.log)"
    $SUDO sh -c 'nohup dockerd >/tmp/parley-dockerd.log 2>&1 & echo $! >/tmp/parley-dockerd.pid'
    STARTED_DOCKERD=$(cat /tmp/parley-dockerd.pid)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 /tmp/parley-dockerd.log >&2; die "dockerd did not come up"; }
    echo "dockerd is running (pid $STARTED_DOCKERD); it is left running for the next build"
fi

# BuildKit is needed for RUN --mount (the CA secret, the pip cache). `docker buildx` where it is installed; otherwise
# a client older than 23 (Debian bookworm's docker.io is 20.10), which has BuildKit built in behind DOCKER_BUILDKIT=1.
BUILD=()
if docker buildx version >/dev/null 2>&1; then
    BUILD=(docker buildx build --load)
else
    while read -r client; do
        version=$("$client" version --format '{{.Client.Version}}' 2>/dev/null || true)
        if [ -n "$version" ] && [ "${version%%.*}" -lt 23 ]; then
            BUILD=(env DOCKER_BUILDKIT=1 "$client" build)
            break
        fi
    done < <(type -ap docker)
fi
[ ${#BUILD[@]} -gt 0 ] || die "no BuildKit: install the buildx plugin (docker-buildx), or Debian's docker.io client"

# --- the base image ----------------------------------------------------------------------------------------------
if [ -z "${BASE_IMAGE:-}" ]; then
    BASE_IMAGE=$BASE_TAG
    if [ -n "${DOCKER_TEST_NEW_BASE:-}" ] || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
        rootfs=$(mktemp -d /tmp/parley-rootfs.XXXXXX)
        log "making $BASE_IMAGE: debootstrap --variant=minbase bookworm (python3, python3-venv, ca-certificates)"
        start=$(date +%s)
        $SUDO debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >/tmp/parley-debootstrap.log 2>&1 \
            || { tail -20 /tmp/parley-debootstrap.log >&2; $SUDO rm -rf "$rootfs"; die "debootstrap failed"; }
        # What the official Debian images do: the sources of bookworm, its updates and security; no package cache,
        # no documentation or translations for packages installed later.
        $SUDO rm -f "$rootfs/etc/apt/sources.list"
        printf '%s\n' 'Types: deb' "URIs: $DEBIAN_MIRROR" 'Suites: bookworm bookworm-updates' 'Components: main' \
            'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' '' \
            'Types: deb' "URIs: ${DEBIAN_MIRROR%/debian}/debian-security" 'Suites: bookworm-security' \
            'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
            | $SUDO tee "$rootfs/etc/apt/sources.list.d/debian.sources" >/dev/null
        printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
            'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/info/*' \
            | $SUDO tee "$rootfs/etc/dpkg/dpkg.cfg.d/docker-minimal" >/dev/null
        $SUDO find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
        $SUDO rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/* \
            "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old "$rootfs"/var/log/* "$rootfs"/tmp/*
        $SUDO tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
        $SUDO rm -rf "$rootfs"
        echo "made $BASE_IMAGE in $(($(date +%s) - start)) s"
    else
        echo "using $BASE_IMAGE (made earlier; DOCKER_TEST_NEW_BASE=1 makes it again)"
    fi
fi

# --- the image ---------------------------------------------------------------------------------------------------
secret=()
[ -n "$CA_BUNDLE" ] && secret=(--secret "id=ca,src=$CA_BUNDLE")
log "building $IMAGE on $BASE_IMAGE: ${BUILD[*]}${CA_BUNDLE:+ (CA secret: $CA_BUNDLE)}"
start=$(date +%s)
"${BUILD[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" "${secret[@]}" -t "$IMAGE" .
echo "built in $(($(date +%s) - start)) s"

# --- a container -------------------------------------------------------------------------------------------------
cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    docker volume rm "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
log "starting $NAME, published on 127.0.0.1:$PORT only, /data on volume $VOLUME"
start=$(date +%s.%N)
docker run -d --name "$NAME" -p "127.0.0.1:$PORT:8080" -v "$VOLUME:/data" \
    -e PARLEY_WEB__API_KEYS="$API_KEY" "$IMAGE" >/dev/null
status=
while :; do
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/healthz" || true)
    [ "$status" = 200 ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || { docker logs "$NAME" >&2; die "the container exited"; }
    python3 -c "import sys; sys.exit(float('$(date +%s.%N)') - $start < $HEALTH_TIMEOUT)" \
        && { docker logs "$NAME" >&2; die "no 200 from /healthz in $HEALTH_TIMEOUT s (last: $status)"; }
    sleep 0.2
done
healthy=$(python3 -c "print(f'{float(\"$(date +%s.%N)\") - $start:.1f}')")
echo "GET /healthz: 200 after $healthy s: $(curl -s "$URL/healthz")"

# Docker's own HEALTHCHECK (the urllib probe inside the container) must agree; it runs every 10 s.
for _ in $(seq 60); do
    state=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
    [ "$state" = healthy ] && break
    [ "$state" = unhealthy ] && { docker inspect -f '{{json .State.Health}}' "$NAME" >&2; die "HEALTHCHECK: unhealthy"; }
    sleep 1
done
[ "$state" = healthy ] || die "HEALTHCHECK: still '$state'"
docker_healthy=$(python3 -c "print(f'{float(\"$(date +%s.%N)\") - $start:.1f}')")
echo "HEALTHCHECK: healthy after $docker_healthy s"

log "one chat through the API"
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data '{"message": "hi", "stream": false}' "$URL/api/chat")
[ "$status" = 401 ] || die "POST /api/chat without a key answered $status, not 401"
echo "without a key: 401"
reply=$(curl -s --fail-with-body --max-time 120 -X POST -H "Authorization: Bearer $API_KEY" \
    -H 'Content-Type: application/json' \
    --data '{"message": "Say hello in one short sentence.", "stream": false}' "$URL/api/chat") \
    || die "POST /api/chat failed: $reply"
python3 -c '
import json, sys
body = json.loads(sys.argv[1])
assert body["text"].strip(), body
print("conversation_id:", body["conversation_id"])
print("text:", json.dumps(body["text"]))
print("usage:", json.dumps(body["usage"]))
' "$reply"

log "a restart in the middle of the conversation"
conversation=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["conversation_id"])' "$reply")
docker restart -t 30 "$NAME" >/dev/null
for _ in $(seq "$HEALTH_TIMEOUT"); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/healthz" || true)" = 200 ] && break
    sleep 1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/healthz" || true)" = 200 ] \
    || { docker logs "$NAME" >&2; die "no 200 from /healthz after the restart"; }
kept=$(docker exec "$NAME" sh -c 'ls /data/kv-cache/*/*.kv 2>/dev/null | wc -l')
[ "$kept" -ge 1 ] || die "no KV state in /data/kv-cache after the restart"
echo "KV states kept on the volume: $kept"
again=$(curl -s --fail-with-body --max-time 120 -X POST -H "Authorization: Bearer $API_KEY" \
    -H 'Content-Type: application/json' \
    --data "{\"message\": \"And once more.\", \"stream\": false, \"conversation_id\": \"$conversation\"}" \
    "$URL/api/chat") || die "POST /api/chat after the restart failed: $again"
python3 -c '
import json, sys
body = json.loads(sys.argv[1])
assert body["text"].strip() and body["conversation_id"] == sys.argv[2], body
print("same conversation after the restart:", json.dumps(body["text"]))
' "$again" "$conversation"
hits=$(curl -s -H "Authorization: Bearer $API_KEY" "$URL/metrics" | awk '/^parley_engine_kv_cache_hits_total /{print $2}')
python3 -c 'import sys; sys.exit(float(sys.argv[1] or 0) < 1)' "$hits" \
    || die "the turn after the restart re-read its history (kv_cache_hits $hits)"
echo "it continued from the KV state on the volume (parley_engine_kv_cache_hits_total $hits)"

log "inside the container"
docker exec "$NAME" sh -c 'echo "user: $(id -un) ($(id -u):$(id -g))"; ls -l /data/parley.db; test ! -e /run/secrets/ca'
echo "no /run/secrets/ca at run time"
if [ -n "$CA_BUNDLE" ]; then
    # A certificate of the bundle that the image's own bundle lacks (the proxy's CA) must be nowhere in the image.
    marker=$(docker run --rm --entrypoint python3 -v "$(readlink -f "$CA_BUNDLE"):/tmp/host-ca.pem:ro" "$IMAGE" -c '
import re, ssl
def certs(path):
    text = open(path).read()
    return set(re.findall(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", text, re.S))
own = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
extra = sorted(certs("/tmp/host-ca.pem") - certs(own))
print(extra[0].splitlines()[3] if extra else "")
')
    if [ -n "$marker" ]; then
        found=$(docker run --rm --entrypoint grep "$IMAGE" -rlF -e "$marker" /etc /opt /usr /data /home /root /tmp \
            2>/dev/null || true)
        [ -z "$found" ] || die "the CA from $CA_BUNDLE is in the image: $found"
        echo "the CA bundle's extra certificate (not in the base's bundle) is nowhere in the image"
    else
        echo "$CA_BUNDLE has no certificate that the base's bundle lacks: nothing to look for"
    fi
fi

log "result"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
base_size=$(docker image inspect -f '{{.Size}}' "$BASE_IMAGE")
echo "image:            $IMAGE ($(docker image inspect -f '{{.Id}}' "$IMAGE" | cut -c8-19))"
echo "image size:       $((size / 1000000)) MB ($size bytes; base $BASE_IMAGE: $((base_size / 1000000)) MB)"
echo "/healthz 200:     $healthy s after docker run"
echo "HEALTHCHECK:      healthy after $docker_healthy s"
echo "chat:             $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["text"])' "$reply")"
echo "docker-test: OK"
