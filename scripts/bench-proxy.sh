#!/usr/bin/env bash
# P1/P4: gpuctl serve's overhead vs a direct streaming backend and vs nginx
# (proxy_buffering off), and its RSS idle and at 64 streams. Loopback only,
# about 30 s. Needs nginx (Debian: nginx-light) for the nginx column; without
# it that column reads n/a. Extra arguments go to proxybench (-phase, -streams,
# -json FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -trimpath -o "$tmp/gpuctl" ./cmd/gpuctl
go build -trimpath -o "$tmp/proxybench" ./bench/proxybench
"$tmp/proxybench" -gpuctl "$tmp/gpuctl" "$@"
