#!/usr/bin/env bash
# Build the Debian package of carpd, check it with lintian, install it, check
# what it installed, and remove it again. Needs root (dpkg -i); installs
# cargo-deb, lintian, man-db and systemd when missing.
#
#   bash scripts/test-package.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "test-package: needs root (dpkg -i)"; exit 1; }

need_apt=()
command -v man >/dev/null || need_apt+=(man-db)
command -v lintian >/dev/null || need_apt+=(lintian)
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
# Debian policy: pages compressed with gzip -9n (no name, no time: reproducible).
gzip -9nf "$target/release/assets"/*.[158]
# --dbgsym strips the binaries, keeping their debug info in a separate .ddeb.
deb=$(cargo deb -p carpd --no-build --locked --dbgsym | tail -n 1)
echo "built $deb"

fail() { echo "test-package: FAILED: $*"; exit 1; }
# Any error or warning fails; packaging/lintian-overrides lists the accepted tags.
lintian --fail-on error,warning "$deb" || fail "lintian $deb"
echo "ok: lintian $(basename "$deb")"

cleanup() { dpkg -P carpd >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb"

version=$(carpd --version) || fail "carpd --version"
[ "$version" = "carpd $(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="carpd"][0])')" ] \
    || fail "unexpected version: $version"
echo "ok: $version"
carpctl --help >/dev/null || fail "carpctl --help"
# man -w also checks that the manual database finds the page.
for page in carpd.8 carpd.toml.5 carpctl.1 carpctl-maintenance.1; do
    name=${page%.*}
    path=$(man -w "${page##*.}" "$name") || fail "man -w $page"
    [ "$path" = "/usr/share/man/man${page##*.}/$page.gz" ] || fail "man -w $page: $path"
    # The page renders without warnings (as lintian checks) and has its sections.
    warnings=$(MANWIDTH=80 man --warnings "${page##*.}" "$name" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "man $page: $warnings"
done
[ "$(man -w carpd)" = /usr/share/man/man8/carpd.8.gz ] || fail "man carpd is not carpd(8)"
text=$(MANWIDTH=80 man carpd) || fail "man carpd"
grep -q '^SIGNALS' <<<"$text" || fail "man carpd has no SIGNALS section"
text=$(MANWIDTH=80 man carpd.toml) || fail "man carpd.toml"
grep -q '^VHOST KEYS' <<<"$text" || fail "man carpd.toml has no VHOST KEYS section"
echo "ok: man pages: $(man -w carpd) $(man -w carpd.toml) ..."
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
