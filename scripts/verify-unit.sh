#!/usr/bin/env bash
# systemd-analyze verify systemd/gre.service, with its /opt/gre paths pointed at this
# checkout (verify checks that ExecStart exists).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/opt/gre#$root#g" "$root/systemd/gre.service" > "$tmp/gre.service"
out=$(systemd-analyze verify "$tmp/gre.service" 2>&1 | grep -v -e 'Failed to connect' -e 'nvidia-persistenced' || true)
if [ -n "$out" ]; then
    echo "$out" >&2
    exit 1
fi
echo "systemd-analyze verify systemd/gre.service: ok"
