#!/bin/sh
# systemd/xformd.service passes `systemd-analyze verify` (paths pointed at a stand-in binary
# and config, since nothing is installed during make check). TAP output; SKIP without
# systemd-analyze.
echo "1..1"
unit="${XF_SRCDIR:-$(dirname "$0")/../..}/systemd/xformd.service"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "ok 1 - systemd unit # SKIP systemd-analyze not installed"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/xf-unit.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
cp /bin/true "$tmp/xformd" && : > "$tmp/xformd.conf"
sed -e "s|/usr/local/bin/xformd|$tmp/xformd|g" -e "s|/usr/local/etc/xformd.conf|$tmp/xformd.conf|g" \
    "$unit" > "$tmp/xformd.service"
if out=$(systemd-analyze verify "$tmp/xformd.service" 2>&1) && [ -z "$out" ]; then
    echo "ok 1 - systemd-analyze verify xformd.service"
else
    echo "not ok 1 - systemd-analyze verify xformd.service"
    printf '%s\n' "$out" | sed 's/^/# /'
fi
