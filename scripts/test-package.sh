#!/usr/bin/env bash
# Build the Debian package of carpd, install it, check what it installed, and
# remove it again. Needs root (dpkg -i); installs cargo-deb, man-db and
# systemd when missing.
#
#   bash scripts/test-package.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "test-package: needs root (dpkg -i)"; exit 1; }

need_apt=()
command -v man >/dev/null || need_apt+=(man-db)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

if [ "$(dpkg-query -W -f='${Status}' carpd 2>/dev/null)" = "install ok installed" ]; then
    echo "test-package: a carpd package is already installed; refusing to replace it"
    exit 1
fi

cargo build --release --locked -p carpd
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
rm -rf "$target/release/assets"
"$target/release/carpd" assets "$target/release/assets"
"$target/release/carpctl" assets "$target/release/assets"
deb=$(cargo deb -p carpd --no-build --locked | tail -n 1)
echo "built $deb"

cleanup() { dpkg -P carpd >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb"

fail() { echo "test-package: FAILED: $*"; exit 1; }
version=$(carpd --version) || fail "carpd --version"
[ "$version" = "carpd $(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="carpd"][0])')" ] \
    || fail "unexpected version: $version"
echo "ok: $version"
carpctl --help >/dev/null || fail "carpctl --help"
# man -w also checks that the manual database finds the page.
for page in carpd carpctl carpd-run carpctl-maintenance; do
    man -w "$page" >/dev/null || fail "man -w $page"
done
echo "ok: man pages: $(man -w carpd) ..."
[ -f /etc/carpd/carpd.toml.example ] || fail "no /etc/carpd/carpd.toml.example"
[ -f /usr/share/bash-completion/completions/carpctl ] || fail "no bash completion"
unit=/lib/systemd/system/carpd.service
[ -f "$unit" ] || fail "no $unit"

# systemd-analyze verify loads the unit with the real systemd parser: unknown
# keys, a missing ExecStart binary or bad capability names are errors. It
# works without a running systemd (it does not talk to PID 1).
if out=$(systemd-analyze verify "$unit" 2>&1); then
    echo "ok: systemd-analyze verify $unit"
else
    echo "$out"
    fail "systemd-analyze verify $unit"
fi
# verify does not fail on warnings; treat any mention of our unit as an error.
if echo "$out" | grep -q 'carpd.service'; then
    echo "$out"
    fail "systemd-analyze verify printed warnings about the unit"
fi

dpkg -P carpd >/dev/null
trap - EXIT
command -v carpd >/dev/null && fail "carpd still installed after dpkg -r"
echo "ok: dpkg -r carpd"
echo "test-package: all checks passed"
