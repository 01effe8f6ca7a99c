#!/usr/bin/env bash
# Reproduce tests/vectors/ucarp-v4.txt: capture real CARP advertisements sent by
# Debian's ucarp between two throw-away network namespaces.
#
# Usage (as root):  ./capture-ucarp.sh [OUT_TXT] [KEEP_PCAP]
#   OUT_TXT    defaults to ucarp-v4.txt next to this script
#   KEEP_PCAP  optional path; if given, the raw capture is copied there
#
# Topology (nothing is created or changed in the root namespace):
#   ns carpA-$$ : veth "cA" 192.0.2.10/24  <- ucarp runs here
#   ns carpB-$$ : veth "cB" 192.0.2.20/24  <- tcpdump captures here
# Addresses are only from 192.0.2.0/24 (RFC 5737 documentation range).
#
# Needs: iproute2, ucarp, tcpdump, tshark, coreutils (timeout).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/ucarp-v4.txt}
KEEP_PCAP=${2:-}

VHID=7
PASS=carpd-test
VIP=192.0.2.100
SRC=192.0.2.10
PEER=192.0.2.20
ADVBASE=1
ADVSKEW=0
NPKTS=3          # adverts to capture (first one is the vector)
CAP_SECS=12      # hard bound for the capture (ucarp becomes MASTER after ~3 s)

NSA="carpA-$$"
NSB="carpB-$$"
IFA=cA
IFB=cB
TMP=$(mktemp -d /tmp/carp-capture.XXXXXX)
PCAP=$TMP/ucarp.pcap
UCARP_PID=
TCPDUMP_PID=

cleanup() {
    set +e
    [ -n "$UCARP_PID" ] && kill "$UCARP_PID" 2>/dev/null && wait "$UCARP_PID" 2>/dev/null
    [ -n "$TCPDUMP_PID" ] && kill "$TCPDUMP_PID" 2>/dev/null && wait "$TCPDUMP_PID" 2>/dev/null
    # Deleting a netns does not kill processes inside it; kill any leftovers by namespace.
    for ns in "$NSA" "$NSB"; do
        if ip netns list | grep -qw "$ns"; then
            for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
            ip netns del "$ns" 2>/dev/null
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in ip ucarp tcpdump tshark timeout; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }

# --- namespaces + veth (created directly inside the namespaces) -------------
ip netns add "$NSA"
ip netns add "$NSB"
ip -n "$NSA" link add "$IFA" type veth peer name "$IFB" netns "$NSB"
ip -n "$NSA" addr add "$SRC/24" dev "$IFA"
ip -n "$NSB" addr add "$PEER/24" dev "$IFB"
ip -n "$NSA" link set lo up
ip -n "$NSB" link set lo up
ip -n "$NSA" link set "$IFA" up
ip -n "$NSB" link set "$IFB" up

# --- capture on the receiving side -----------------------------------------
timeout "$CAP_SECS" ip netns exec "$NSB" \
    tcpdump -i "$IFB" -n -U -c "$NPKTS" -w "$PCAP" 'ip proto 112' \
    2>"$TMP/tcpdump.err" &
TCPDUMP_PID=$!
for _ in $(seq 50); do
    grep -q 'listening on' "$TMP/tcpdump.err" 2>/dev/null && break
    sleep 0.1
done

# --- ucarp -----------------------------------------------------------------
UCARP_ARGS=(--interface="$IFA" --srcip="$SRC" --vhid="$VHID" --pass="$PASS"
            --addr="$VIP" --advbase="$ADVBASE" --advskew="$ADVSKEW"
            --upscript=/bin/true --downscript=/bin/true)
timeout "$((CAP_SECS + 3))" ip netns exec "$NSA" ucarp "${UCARP_ARGS[@]}" \
    >"$TMP/ucarp.log" 2>&1 &
UCARP_PID=$!

set +e
wait "$TCPDUMP_PID"
TCPDUMP_RC=$?
set -e
TCPDUMP_PID=
kill "$UCARP_PID" 2>/dev/null || true
wait "$UCARP_PID" 2>/dev/null || true
UCARP_PID=

if [ "$TCPDUMP_RC" != 0 ] && [ "$TCPDUMP_RC" != 124 ]; then
    echo "tcpdump failed (rc $TCPDUMP_RC):" >&2; cat "$TMP/tcpdump.err" >&2; exit 1
fi
[ -n "$KEEP_PCAP" ] && cp "$PCAP" "$KEEP_PCAP"

# --- decode ----------------------------------------------------------------
# One line per packet: "<epoch> <src mac> <dst mac> <hex of IP packet>"
PKTS=$(tcpdump -r "$PCAP" -n -tt -e -x 2>/dev/null | awk '
    /^[0-9]/ { if (hex != "") print ts, sm, dm, hex; ts=$1; sm=$2; dm=$4; sub(/,$/, "", dm); hex=""; next }
    /^[ \t]+0x[0-9a-f]+:/ { for (i = 2; i <= NF; i++) hex = hex $i; next }
    END { if (hex != "") print ts, sm, dm, hex }')
N=$(printf '%s\n' "$PKTS" | grep -c . || true)
[ "$N" -ge 1 ] || { echo "no CARP advertisement captured" >&2; cat "$TMP/ucarp.log" >&2; exit 1; }

read -r _ SMAC DMAC PKT <<<"$(printf '%s\n' "$PKTS" | head -n1)"
IHL=$(( 0x${PKT:1:1} * 4 ))
IPHDR=${PKT:0:$((IHL * 2))}
CARP=${PKT:$((IHL * 2)):72}
[ "${#CARP}" = 72 ] || { echo "short CARP payload: $CARP" >&2; exit 1; }
TTL=$(( 0x${IPHDR:16:2} ))

TSHARK_CARP=$(tshark -r "$PCAP" -c 1 -d ip.proto==112,carp -V 2>/dev/null \
    | sed -n '/^Common Address Redundancy Protocol/,$p' || true)
TSHARK_SUM=$(printf '%s\n' "$TSHARK_CARP" | grep -m1 -E '^\s*Checksum:' | sed 's/^\s*//' || true)
TSHARK_STATUS=$(printf '%s\n' "$TSHARK_CARP" | grep -m1 -E 'Checksum Status' | sed 's/^\s*//' || true)
TSHARK_CTR=$(printf '%s\n' "$TSHARK_CARP" | grep -m1 -E '^\s*Counter:' | sed 's/^\s*//' || true)
TSHARK_VER=$(tshark --version 2>/dev/null | head -n1)
UCARP_VER=$(dpkg-query -W -f='${Package} ${Version}' ucarp 2>/dev/null \
    || ucarp --help 2>&1 | grep -m1 ucarp)

{
    echo "# CARPv2 IPv4 advertisement captured from a real ucarp (golden vector)."
    echo "# Source: Debian package $UCARP_VER ($(ucarp --help 2>&1 | grep -m1 -o 'ucarp [0-9.]* - .*'))"
    echo "# Captured: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "# Reproduce: crates/carp-proto/tests/vectors/capture-ucarp.sh (as root; uses netns + veth)"
    echo "# Command:   ucarp ${UCARP_ARGS[*]}"
    echo "#            (--interface is a veth inside a throw-away netns; capture with tcpdump on the peer veth)"
    echo "# Packet 1 of $N captured; ethernet src $SMAC dst $DMAC; IP header length $IHL"
    echo "# tshark ($TSHARK_VER) 'tshark -r <pcap> -d ip.proto==112,carp -V' on packet 1:"
    echo "#   $TSHARK_SUM"
    echo "#   $TSHARK_STATUS"
    echo "#   $TSHARK_CTR"
    echo "# All captured packets (epoch, eth src, eth dst, IP id, counter = CARP bytes 8..16):"
    i=0; prev=; incr=yes
    while read -r ts sm dm pkt; do
        i=$((i + 1))
        ihl=$(( 0x${pkt:1:1} * 8 ))
        ctr=${pkt:$((ihl + 16)):16}
        echo "#   pkt$i $ts $sm > $dm tos=0x${pkt:2:2} id=0x${pkt:8:4} flags/frag=0x${pkt:12:4} counter=$ctr"
        # bash arithmetic is 64-bit two's complement, so the difference is exact mod 2^64
        if [ -n "$prev" ] && [ $(( 0x$ctr - 0x$prev )) != 1 ]; then incr=no; fi
        prev=$ctr
    done <<<"$PKTS"
    echo "# Counter is previous+1 in every consecutive packet: $incr"
    echo "#   (ucarp draws a fresh random 64-bit counter per advert until it has accepted"
    echo "#    an advert from a peer; only then does it continue at peer_counter+1, +1 per advert)"
    echo "# Fields: ip_header = the full IPv4 header as captured; carp = the 36 bytes after it."
    echo "# HMAC-SHA1(key = pass bytes, msg = 02 01 vhid vip(4) carp[8..16]) == carp[16..36]."
    echo "pass = $PASS"
    echo "vhid = $VHID"
    echo "vip = $VIP"
    echo "src = $SRC"
    echo "ttl = $TTL"
    echo "ip_header = $IPHDR"
    echo "carp = $CARP"
} >"$OUT"

echo "wrote $OUT ($N packets captured)" >&2
