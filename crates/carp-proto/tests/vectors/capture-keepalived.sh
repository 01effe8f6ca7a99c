#!/usr/bin/env bash
# Capture the VRRPv3 advertisements of keepalived-vrrp3.txt again (as root).
# Everything happens in a throw-away network namespace; nothing touches the
# root namespace. Prints the first IPv4 and IPv6 packet's src, dst and bytes.
set -euo pipefail
command -v keepalived >/dev/null || { echo "needs keepalived (apt-get install keepalived)"; exit 1; }
ns=carpt-kacap-$$
dir=$(mktemp -d)
cleanup() { pkill -f "keepalived.*$dir" 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link add eth0 type veth peer name eth1
ip -n "$ns" link set lo up
ip -n "$ns" link set eth0 up
ip -n "$ns" link set eth1 up
ip -n "$ns" addr add 192.0.2.10/24 dev eth0
ip -n "$ns" addr add 2001:db8::10/64 dev eth0 nodad
sleep 2
cat >"$dir/k.conf" <<'CONF'
global_defs { vrrp_version 3
  enable_script_security
  script_user root }
vrrp_instance V4 { interface eth0
  state BACKUP
  virtual_router_id 5
  priority 100
  advert_int 1
  virtual_ipaddress { 192.0.2.50/24
    192.0.2.51/24 } }
vrrp_instance V6 { interface eth0
  state BACKUP
  virtual_router_id 6
  priority 150
  advert_int 0.5
  virtual_ipaddress { 2001:db8::50/64 } }
CONF
ip netns exec "$ns" timeout 10 tcpdump -U -n -i eth1 -w "$dir/k.pcap" 'ip proto 112 or ip6 proto 112' 2>/dev/null &
sleep 1
ip netns exec "$ns" timeout 7 keepalived -n -l -D -f "$dir/k.conf" -p "$dir/k.pid" -r "$dir/v.pid" >/dev/null 2>&1 || true
sleep 3
python3 - "$dir/k.pcap" <<'PY'
import ipaddress, struct, sys
d = open(sys.argv[1], 'rb').read()
off, seen = 24, {}
while off < len(d):
    _, _, cl, _ = struct.unpack('<IIII', d[off:off + 16]); off += 16
    f = d[off:off + cl]; off += cl
    if struct.unpack('!H', f[12:14])[0] == 0x0800:
        ihl = (f[14] & 15) * 4
        ip, key = f[14:14 + ihl], 'v4'
        src, dst, payload = ipaddress.IPv4Address(ip[12:16]), ipaddress.IPv4Address(ip[16:20]), f[14 + ihl:]
    else:
        ip, key = f[14:54], 'v6'
        src, dst, payload = ipaddress.IPv6Address(ip[8:24]), ipaddress.IPv6Address(ip[24:40]), f[54:]
    seen.setdefault(key, (src, dst, payload.hex()))
for key, (src, dst, hexbytes) in sorted(seen.items()):
    print(f"{key}_src = {src}\n{key}_dst = {dst}\n{key}_vrrp = {hexbytes}")
PY
