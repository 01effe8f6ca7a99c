#!/usr/bin/env bash
# carpd vs ucarp vs keepalived benchmarks in network namespaces.
#
#   bench/run.sh [--quick] [--wait-idle] [--tree] [harness options, e.g. --reps 3 --only crash,scale]
#
# Builds carpd (release) from the committed HEAD (a `git archive` copy under
# /tmp, so work in progress in the tree is not measured; --tree builds the
# work tree instead), installs the Debian tools it needs when missing,
# runs bench/harness.py as root, writes bench/results/<date>-<host>.json, the
# Markdown tables next to it and the SVG charts (bench/plot, from the JSON)
# under bench/results/<date>-<host>/. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/run.sh: needs root (network namespaces)" >&2
    exit 1
fi

WAIT_IDLE=0
TREE=0
ARGS=()
for a in "$@"; do
    case "$a" in
        --wait-idle) WAIT_IDLE=1 ;;
        --tree) TREE=1 ;;
        *) ARGS+=("$a") ;;
    esac
done

need=()
for tool in ucarp:ucarp keepalived:keepalived stress-ng:stress-ng fping:fping tcpdump:tcpdump ping:iputils-ping python3:python3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

TAG="carpb-$$"
SRC=""
BIN=""
cleanup() {
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$TAG-" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ -n "$BIN" ]; then rm -rf "$BIN"; fi
    if [ "$TREE" = 0 ] && [ -n "$SRC" ]; then rm -rf "$SRC"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "$TREE" = 1 ]; then
    SRC="$ROOT"
    export CARGO_TARGET_DIR="$ROOT/target"
    REV="$(git rev-parse --short HEAD) + work tree"
else
    # A clean copy of HEAD with its own target directory (kept between runs as a cache).
    SRC=$(mktemp -d "/tmp/$TAG-src.XXXX")
    git archive HEAD | tar -x -C "$SRC"
    export CARGO_TARGET_DIR=/tmp/carpb-target
    REV="$(git rev-parse --short HEAD)"
fi
echo "== building carpd (release, $REV), the chart tool and the flood generator"
(cd "$SRC" && cargo build --release -q -p carpd)
(cd bench/plot && CARGO_TARGET_DIR=target cargo build --release -q)

# A private copy of the binaries: other builds do not change them mid-run.
BIN=$(mktemp -d "/tmp/$TAG-bin.XXXX")
cp "$CARGO_TARGET_DIR/release/carpd" "$CARGO_TARGET_DIR/release/carpctl" "$BIN/"
cp bench/plot/target/release/carpd-bench-flood "$BIN/"


if [ "$WAIT_IDLE" = 1 ]; then
    echo "== waiting (at most 20 min) for the 1-minute load average to drop below 1.0"
    for _ in $(seq 1 120); do
        load=$(cut -d' ' -f1 /proc/loadavg)
        if awk -v l="$load" 'BEGIN { exit !(l < 1.0) }'; then break; fi
        sleep 10
    done
    echo "   load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

STAMP="$(date -u +%Y-%m-%d)-$(hostname -s)"
OUT="bench/results/$STAMP.json"
# The full run takes about 75 minutes (five 5-minute soaks among it); two hours is the hard stop.
CARPD="$BIN/carpd" CARPCTL="$BIN/carpctl" CARPB_FLOOD="$BIN/carpd-bench-flood" CARPB_TAG="$TAG" CARPB_SRC="$SRC" \
    CARPB_REV="$REV" timeout --foreground -s INT 7200 python3 bench/harness.py --out "$OUT" "${ARGS[@]}" && rc=0 || rc=$?

if [ -f "$OUT" ]; then
    python3 bench/report.py "$OUT" > "bench/results/$STAMP.md"
    bench/plot/target/release/carpd-bench-plot "$OUT" "bench/results/$STAMP"
    echo "== results: $OUT, bench/results/$STAMP.md, charts in bench/results/$STAMP/"
fi
exit "$rc"
