#!/usr/bin/env bash
# Builds the gateway's container image from this repository without
# pulling anything: compiles ./cmd/caddy as a static binary here, gathers
# it with this machine's CA bundle and Caddyfile.example in a build folder,
# and builds deploy/Containerfile (FROM scratch) with podman, or docker
# where that is what the machine has.
#
#   deploy/image.sh [TAG]          # default tag: caddy-openrouter-keys:dev
#
# Environment: CONTAINER_ENGINE (podman or docker; default: podman if
# installed), CA_BUNDLE (the PEM bundle to ship; default: the first of the
# usual system paths), GOARCH (the image's architecture; default: Go's).
set -euo pipefail

tag="${1:-caddy-openrouter-keys:dev}"
root="$(cd "$(dirname "$0")/.." && pwd)"

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
	if command -v podman >/dev/null 2>&1; then
		engine=podman
	elif command -v docker >/dev/null 2>&1; then
		engine=docker
	else
		echo "image.sh: neither podman nor docker is installed" >&2
		exit 1
	fi
fi

ca="${CA_BUNDLE:-}"
if [ -z "$ca" ]; then
	# Debian and Ubuntu, Fedora and RHEL, openSUSE, Alpine and macOS.
	for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt \
		/etc/ssl/ca-bundle.pem /etc/ssl/cert.pem; do
		if [ -s "$f" ]; then
			ca="$f"
			break
		fi
	done
fi
if [ -z "$ca" ] || [ ! -s "$ca" ]; then
	echo "image.sh: no CA bundle found; set CA_BUNDLE to a PEM file of trusted roots" >&2
	exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

arch="${GOARCH:-$(cd "$root" && go env GOARCH)}"
# Static (no libc in the image), without the build machine's paths
# (-trimpath: reproducible, and stack traces name modules, not folders), and
# without the symbol table and DWARF (-s -w: 30% smaller; panics still
# print function names and lines).
# A -race in GOFLAGS (a test run's) cannot apply: it needs cgo.
goflags="${GOFLAGS:-}"
goflags="${goflags//-race/}"
(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" GOFLAGS="$goflags" \
	go build -trimpath -ldflags '-s -w' -o "$ctx/caddy" ./cmd/caddy)

cp "$ca" "$ctx/ca-certificates.crt"
cp "$root/Caddyfile.example" "$ctx/Caddyfile"
echo 'caddy:x:65532:65532:caddy:/data:/sbin/nologin' >"$ctx/passwd"
echo 'caddy:x:65532:' >"$ctx/group"
mkdir "$ctx/data" "$ctx/config" "$ctx/tmp"
chmod 0755 "$ctx/caddy" "$ctx/data" "$ctx/config" "$ctx/tmp"
chmod 0644 "$ctx/ca-certificates.crt" "$ctx/Caddyfile" "$ctx/passwd" "$ctx/group"

revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ]; then
	revision="$revision-dirty"
fi

args=(build --file "$root/deploy/Containerfile" --tag "$tag" --platform "linux/$arch"
	--build-arg "REVISION=$revision")
# podman: never pull (FROM scratch needs nothing); docker pulls nothing for
# scratch either.
if [ "$engine" = podman ]; then
	args+=(--pull=never)
fi
"$engine" "${args[@]}" "$ctx"

size="$("$engine" image inspect --format '{{.Size}}' "$tag")"
echo "image.sh: built $tag ($revision), $((size / 1000000)) MB"
