// SPDX-License-Identifier: ISC
//
// carpd's load-balancing datapath: OpenBSD carp_lsdrop at tc ingress of a
// carpdev (spec section 7). Built by scripts/build-bpf.sh into balance.bpf.o,
// which is committed and embedded by crates/carpd/src/os/balance.rs; that
// module documents the maps from the user-space side and owns the layout.
//
// Per frame, in this order:
//  1. ARP request whose target IP is a shared address, or ICMPv6 Neighbour
//     Solicitation whose target is one: dropped (carpd answers them from user
//     space; the kernel must not). Counted dropped_solicitation. Other ARP
//     sent to a unicast carp MAC (the answer to a request carp_egress
//     rewrote) becomes PACKET_HOST, like IP below; passed_other.
//  2. IPv4/IPv6 packet to a shared address of a carp interface in a
//     balancing mode, sent to a unicast MAC or to that interface's multicast
//     carp MAC (mode ip):
//       ip, ip-stealth, ip-unicast: slot = ntohl(fold) % count, where fold is
//         src ^ dst (IPv4) or the XOR of all eight 32-bit words (IPv6);
//       arp: slot = index of the node whose MAC the frame was sent to (only
//         frames to a node MAC are judged; OpenBSD 1.270).
//     Bit `slot` of the mask set: accepted, and a frame sent to the carp MAC
//     that the stack would not take as its own (MULTICAST in ip mode,
//     OTHERHOST in ip-stealth / ip-unicast / arp) becomes PACKET_HOST, which
//     is what OpenBSD's PACKET_TAG_CARP_BAL_IP does for M_MCAST; otherwise
//     dropped (dropped_by_hash). count 0 drops, as OpenBSD does.
//  3. Everything else (broadcast and other multicast, so advertisements,
//     frames to other addresses, other protocols): passed_other.
//
// At tc egress (carp_egress), so a client never binds a shared address to
// this host's real MAC (every host holds the shared addresses; the kernel
// solicits with one as sender, arp_announce 0 and ndisc_solicit):
//  - IP modes: an ARP packet (request or reply) whose sender IP is a shared
//    address gets sender MAC := the leader MAC (multicast in mode ip); an
//    NS or NA whose IPv6 source is one gets its source / target link-layer
//    address option := the leader MAC, checksum fixed. The Ethernet source
//    stays the real MAC (a multicast MAC cannot be one). carpd's own
//    answers already carry the leader MAC, so this is idempotent for them.
//  - arp: the node for the peer is unknown before it answers. An ARP
//    request with a shared sender IP becomes an RFC 5227 probe (sender IP
//    0.0.0.0: the peer answers and updates no entry); an NS gets the MAC of
//    the lowest node that is MASTER here, and none when the mask is 0 (no
//    node MAC stands for this host then; the peer answers the real MAC).
//    Gratuitous ARP (sender IP = target IP), ARP replies and NA are left
//    alone: they are carpd's, sent through a packet socket that passes
//    this hook, and already carry the right node MAC.
//  Each rewrite counts egress_rewritten. Only an NS / NA right after the
//  IPv6 header is looked at (the kernel adds no extension header to ND).
//
// ICMP (OpenBSD where cheap):
//  - ICMP errors (v4 types 3, 11, 12; v6 types 1-4) hash the quoted inner
//    packet's destination with the outer destination, as icmp_input and
//    icmp6_input do, so the error reaches the node that owns the flow. When
//    the quoted header is cut short, the error is hashed like any other
//    packet.
//  - Echo (and any other non-error ICMPv4) is hashed like other packets, so
//    exactly one node answers a ping. DEVIATION: OpenBSD's IPv4 has no echo
//    call site, so every OpenBSD node answers IPv4 pings.
//  - ICMPv6 other than errors and echo (ND, MLD, router messages) is never
//    hashed: a Neighbour Advertisement answering a node's own solicitation
//    must reach that node (OpenBSD ip6_input passes drop=0 for ICMPv6).
//    Sent to the carp MAC it still gets the PACKET_HOST fix-up (a peer that
//    resolved the shared address to the stealth MAC answers our NS there),
//    and in mode arp it is judged by the node MAC like any other packet.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// The legacy map definition aya-obj reads from the "maps" section (no BTF
// needed, so the object builds without -g and stays byte-for-byte
// reproducible).
struct map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 flags;
	__u32 id;
	__u32 pinning;
};

#define MAX_CARPIFS 64
#define MAX_ADDRS 1024
#define MAX_MACS 1024
#define MAX_NODES 32

// Packed carp-interface configuration (one u64, read with one load).
#define CFG_MASK(v) ((__u32)(v))
#define CFG_COUNT(v) ((__u32)((v) >> 32) & 0xff)
#define CFG_MODE(v) ((__u32)((v) >> 40) & 0xff)

enum mode { MODE_NONE = 0, MODE_IP = 1, MODE_IP_STEALTH = 2, MODE_IP_UNICAST = 3, MODE_ARP = 4 };
enum counter { C_ACCEPTED = 0, C_DROPPED_BY_HASH = 1, C_DROPPED_SOLICITATION = 2, C_PASSED_OTHER = 3,
	       C_EGRESS_REWRITTEN = 4, C_MAX };

// Carp-interface slot -> packed mask | count << 32 | mode << 40. mmap-able,
// so carpd changes a mask with one atomic 8-byte store.
struct map_def carp_cfg SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = MAX_CARPIFS,
	.flags = BPF_F_MMAPABLE,
};

// Shared IPv4 address (network order, as in the header) -> carp-interface slot.
struct map_def carp_v4 SEC("maps") = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 4,
	.value_size = sizeof(__u32),
	.max_entries = MAX_ADDRS,
};

// Shared IPv6 address -> carp-interface slot.
struct map_def carp_v6 SEC("maps") = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 16,
	.value_size = sizeof(__u32),
	.max_entries = MAX_ADDRS,
};

// Carp MAC (6 bytes, 2 zero) -> carp-interface slot | node index << 8.
struct map_def carp_macs SEC("maps") = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 8,
	.value_size = sizeof(__u32),
	.max_entries = MAX_MACS,
};

// Carp-interface slot * MAX_NODES + node index -> that node's MAC (6
// bytes, 2 zero); entry 0 of a slot is the leader MAC. Read at egress.
struct map_def carp_nodes SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = MAX_CARPIFS * MAX_NODES,
};

// Per-CPU counters, indexed by enum counter.
struct map_def carp_stats SEC("maps") = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = C_MAX,
};

struct vlan_free_eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

static __always_inline int count(__u32 which, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&carp_stats, &which);

	if (c)
		*c += 1;
	return verdict;
}

static __always_inline __u32 fold6(const __u32 *a)
{
	return a[0] ^ a[1] ^ a[2] ^ a[3];
}

// The verdict for a packet to a shared address of carp-interface slot
// `carpif`, whose fold (network order) is `fold`; `hashed` 0 skips the IP
// hash (ICMPv6 other than echo and errors), keeping the MAC rules.
static __always_inline int judge(struct __sk_buff *skb, const struct vlan_free_eth *eth,
				 __u32 carpif, __u32 fold, int hashed)
{
	__u64 *cfgp = bpf_map_lookup_elem(&carp_cfg, &carpif);
	if (!cfgp)
		return count(C_PASSED_OTHER, TC_ACT_OK);
	__u64 cfg = *(volatile __u64 *)cfgp;
	__u32 mode = CFG_MODE(cfg);
	if (mode == MODE_NONE)
		return count(C_PASSED_OTHER, TC_ACT_OK);

	__u8 key[8] = {};
	__builtin_memcpy(key, eth->dst, 6);
	__u32 *macp = bpf_map_lookup_elem(&carp_macs, key);
	int carp_frame = macp && (*macp & 0xff) == carpif;
	__u32 node = macp ? (*macp >> 8) & 0xff : 0;

	if (eth->dst[0] & 1) {
		// Broadcast and multicast are never dropped, except the
		// multicast carp MAC of mode ip, which carries unicast IP.
		if (!(carp_frame && mode == MODE_IP))
			return count(C_PASSED_OTHER, TC_ACT_OK);
	} else if (!carp_frame && skb->pkt_type == PACKET_OTHERHOST) {
		// Not for this host at all (promiscuous parent): the stack drops it.
		return count(C_PASSED_OTHER, TC_ACT_OK);
	}

	__u32 slot;
	if (mode == MODE_ARP) {
		if (!carp_frame)
			return count(C_PASSED_OTHER, TC_ACT_OK);
		slot = node;
	} else if (!hashed) {
		goto accept;
	} else {
		__u32 n = CFG_COUNT(cfg);
		if (n == 0 || n > 32)
			return count(C_DROPPED_BY_HASH, TC_ACT_SHOT);
		slot = bpf_ntohl(fold) % n;
	}
#ifndef BROKEN_IGNORE_MASK
	if (slot >= 32 || !(CFG_MASK(cfg) & (1u << slot)))
		return count(C_DROPPED_BY_HASH, TC_ACT_SHOT);
#endif
accept:
#ifndef BROKEN_NO_FIXUP
	if (carp_frame && skb->pkt_type != PACKET_HOST)
		bpf_skb_change_type(skb, PACKET_HOST);
#endif
	return count(C_ACCEPTED, TC_ACT_OK);
}

// Is `target` (4 bytes) a shared address of a carp interface in a balancing mode?
static __always_inline int shared_v4(__u32 target)
{
	__u32 *carpif = bpf_map_lookup_elem(&carp_v4, &target);
	if (!carpif)
		return 0;
	__u64 *cfg = bpf_map_lookup_elem(&carp_cfg, carpif);
	return cfg && CFG_MODE(*(volatile __u64 *)cfg) != MODE_NONE;
}

static __always_inline int shared_v6(const void *target)
{
	__u32 *carpif = bpf_map_lookup_elem(&carp_v6, target);
	if (!carpif)
		return 0;
	__u64 *cfg = bpf_map_lookup_elem(&carp_cfg, carpif);
	return cfg && CFG_MODE(*(volatile __u64 *)cfg) != MODE_NONE;
}

// The fixed headers (Ethernet + IPv6, the longest) are read in place; the
// variable-offset parts (after IPv4 options or IPv6 extension headers) with
// bpf_skb_load_bytes. Without CAP_PERFMON the verifier refuses packet
// pointer arithmetic with a register, so nothing here needs more than
// CAP_BPF + CAP_NET_ADMIN.
#define FIXED (14 + 40)

SEC("classifier")
int carp_balance(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + FIXED > end && skb->len >= FIXED) {
		// Only when the head is short: pulling a cloned skb copies it.
		bpf_skb_pull_data(skb, FIXED);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	struct vlan_free_eth *eth = data;
	if ((void *)(eth + 1) > end)
		return count(C_PASSED_OTHER, TC_ACT_OK);
	void *l3 = eth + 1;

	if (eth->proto == bpf_htons(ETH_P_ARP)) {
		// htype 1, ptype 0x0800, hlen 6, plen 4, op; then sha spa tha tpa.
		__u8 *arp = l3;
		if ((void *)(arp + 28) > end)
			return count(C_PASSED_OTHER, TC_ACT_OK);
		if (arp[6] == 0 && arp[7] == 1 && arp[4] == 6 && arp[5] == 4) {
			__u32 tpa;
			__builtin_memcpy(&tpa, arp + 24, 4);
			if (shared_v4(tpa))
				return count(C_DROPPED_SOLICITATION, TC_ACT_SHOT);
		}
#ifndef BROKEN_NO_FIXUP
		// The answer to a solicitation that advertised a unicast carp
		// MAC (see carp_egress) is sent there; arp_rcv drops OTHERHOST.
		if (skb->pkt_type == PACKET_OTHERHOST) {
			__u8 key[8] = {};
			__builtin_memcpy(key, eth->dst, 6);
			if (bpf_map_lookup_elem(&carp_macs, key))
				bpf_skb_change_type(skb, PACKET_HOST);
		}
#endif
		return count(C_PASSED_OTHER, TC_ACT_OK);
	}

	if (eth->proto == bpf_htons(ETH_P_IP)) {
		__u8 *ip = l3;
		if ((void *)(ip + 20) > end)
			return count(C_PASSED_OTHER, TC_ACT_OK);
		__u32 src, dst;
		__builtin_memcpy(&src, ip + 12, 4);
		__builtin_memcpy(&dst, ip + 16, 4);
		__u32 *carpif = bpf_map_lookup_elem(&carp_v4, &dst);
		if (!carpif)
			return count(C_PASSED_OTHER, TC_ACT_OK);
		__u32 fold = src ^ dst;
		__u32 l4off = 14 + (ip[0] & 0xf) * 4;
		int first_fragment = (ip[6] & 0x1f) == 0 && ip[7] == 0;
		// icmp_input: an error hashes the quoted packet's destination
		// (at 8 + 16 of the ICMP header) with our address.
		__u8 type;
		__u32 inner_dst;
		if (ip[9] == 1 && first_fragment && l4off >= 34 &&
		    bpf_skb_load_bytes(skb, l4off, &type, 1) == 0 &&
		    (type == 3 || type == 11 || type == 12) &&
		    bpf_skb_load_bytes(skb, l4off + 8 + 16, &inner_dst, 4) == 0)
			fold = inner_dst ^ dst;
		return judge(skb, eth, *carpif, fold, 1);
	}

	if (eth->proto == bpf_htons(ETH_P_IPV6)) {
		__u8 *ip6 = l3;
		if ((void *)(ip6 + 40) > end)
			return count(C_PASSED_OTHER, TC_ACT_OK);
		__u32 src[4], dst[4];
		__builtin_memcpy(src, ip6 + 8, 16);
		__builtin_memcpy(dst, ip6 + 24, 16);
		__u8 next = ip6[6];
		__u32 l4off = FIXED;
		// Hop-by-hop, routing and destination options (at most three).
#pragma unroll
		for (int i = 0; i < 3; i++) {
			__u8 ext[2];
			if (next != 0 && next != 43 && next != 60)
				break;
			if (bpf_skb_load_bytes(skb, l4off, ext, 2) != 0)
				break;
			next = ext[0];
			l4off += (ext[1] + 1) * 8;
		}
		int hashed = 1;
		__u8 type = 0;
		if (next == 58 && bpf_skb_load_bytes(skb, l4off, &type, 1) == 0) {
			if (type == 135) {
				// Neighbour Solicitation: target at 8..24.
				__u32 target[4];
				if (bpf_skb_load_bytes(skb, l4off + 8, target, 16) == 0 &&
				    shared_v6(target))
					return count(C_DROPPED_SOLICITATION, TC_ACT_SHOT);
				return count(C_PASSED_OTHER, TC_ACT_OK);
			}
			// ND, MLD and the rest are not hashed, but a Neighbour
			// Advertisement sent to the carp MAC still needs PACKET_HOST.
			hashed = type <= 4 || type == 128 || type == 129;
		}
		__u32 *carpif = bpf_map_lookup_elem(&carp_v6, dst);
		if (!carpif)
			return count(C_PASSED_OTHER, TC_ACT_OK);
		__u32 fold = fold6(src) ^ fold6(dst);
		// icmp6_input: the quoted packet's destination (8 + 24).
		__u32 inner_dst[4];
		if (next == 58 && type >= 1 && type <= 4 &&
		    bpf_skb_load_bytes(skb, l4off + 8 + 24, inner_dst, 16) == 0)
			fold = fold6(inner_dst) ^ fold6(dst);
		return judge(skb, eth, *carpif, fold, hashed);
	}

	return count(C_PASSED_OTHER, TC_ACT_OK);
}

// The carp-interface slot and configuration of shared address `key` in
// map `addrs`, or 0 when it is none or its interface balances nothing.
static __always_inline __u32 *shared_slot(void *addrs, const void *key, __u64 *cfg)
{
	__u32 *slot = bpf_map_lookup_elem(addrs, key);
	if (!slot)
		return 0;
	__u64 *cfgp = bpf_map_lookup_elem(&carp_cfg, slot);
	if (!cfgp)
		return 0;
	*cfg = *(volatile __u64 *)cfgp;
	return CFG_MODE(*cfg) == MODE_NONE ? 0 : slot;
}

// Node `node`'s MAC of carp-interface `slot` into `mac` (8 bytes, MAC first).
static __always_inline int node_mac(__u32 slot, __u32 node, __u8 *mac)
{
	__u32 key = slot * MAX_NODES + node;
	__u64 *m = bpf_map_lookup_elem(&carp_nodes, &key);
	if (!m)
		return -1;
	__builtin_memcpy(mac, m, 8);
	return 0;
}

// The MAC an NS from a shared address advertises: the leader's in the IP
// modes, the lowest MASTER node's in mode arp (-1 with no node MASTER).
// A binary search, not a loop: the verifier without CAP_PERFMON walks
// every iteration of a loop apart.
static __always_inline int ns_mac(__u32 slot, __u64 cfg, __u8 *mac)
{
	if (CFG_MODE(cfg) != MODE_ARP)
		return node_mac(slot, 0, mac);
	__u32 n = CFG_COUNT(cfg);
	__u32 m = CFG_MASK(cfg);
	if (n < 32)
		m &= (1u << n) - 1;
	if (m == 0)
		return -1;
	__u32 i = 0;
	if (!(m & 0xffff)) {
		m >>= 16;
		i += 16;
	}
	if (!(m & 0xff)) {
		m >>= 8;
		i += 8;
	}
	if (!(m & 0xf)) {
		m >>= 4;
		i += 4;
	}
	if (!(m & 0x3)) {
		m >>= 2;
		i += 2;
	}
	if (!(m & 0x1))
		i += 1;
	return node_mac(slot, i, mac);
}

// BPF has no memcmp.
static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

#define ARP_OFF 14
#define ICMP6_OFF (14 + 40)

static __always_inline int egress_arp(struct __sk_buff *skb)
{
	__u8 arp[28];
	if (bpf_skb_load_bytes(skb, ARP_OFF, arp, sizeof(arp)) != 0)
		return TC_ACT_OK;
	if (arp[4] != 6 || arp[5] != 4 || arp[6] != 0 || (arp[7] != 1 && arp[7] != 2))
		return TC_ACT_OK;
	__u32 spa, tpa;
	__builtin_memcpy(&spa, arp + 14, 4);
	__builtin_memcpy(&tpa, arp + 24, 4);
	__u64 cfg;
	__u32 *slot = shared_slot(&carp_v4, &spa, &cfg);
	if (!slot)
		return TC_ACT_OK;
	if (CFG_MODE(cfg) == MODE_ARP) {
		// A request that is not gratuitous becomes a probe.
		if (arp[7] != 1 || spa == tpa)
			return TC_ACT_OK;
		__u32 zero = 0;
		bpf_skb_store_bytes(skb, ARP_OFF + 14, &zero, 4, 0);
		return count(C_EGRESS_REWRITTEN, TC_ACT_OK);
	}
	__u8 mac[8];
	if (node_mac(*slot, 0, mac) != 0 || same_mac(mac, arp + 8))
		return TC_ACT_OK;
	bpf_skb_store_bytes(skb, ARP_OFF + 8, mac, 6, 0);
	return count(C_EGRESS_REWRITTEN, TC_ACT_OK);
}

static __always_inline int egress_nd(struct __sk_buff *skb)
{
	__u8 ip6[40];
	if (bpf_skb_load_bytes(skb, 14, ip6, sizeof(ip6)) != 0 || ip6[6] != 58)
		return TC_ACT_OK;
	__u8 type;
	if (bpf_skb_load_bytes(skb, ICMP6_OFF, &type, 1) != 0 || (type != 135 && type != 136))
		return TC_ACT_OK;
	__u64 cfg;
	__u32 *slot = shared_slot(&carp_v6, ip6 + 8, &cfg);
	if (!slot)
		return TC_ACT_OK;
	if (CFG_MODE(cfg) == MODE_ARP && type == 136)
		return TC_ACT_OK;
	__u8 want = type == 135 ? 1 : 2; // source / target link-layer address
	// Options follow the 24-byte NS / NA body; look at the first three.
	__u32 off = ICMP6_OFF + 24;
	__u8 opt[8];
	int found = 0;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (bpf_skb_load_bytes(skb, off, opt, sizeof(opt)) != 0 || opt[1] == 0)
			return TC_ACT_OK;
		if (opt[0] == want && opt[1] == 1) {
			found = 1;
			break;
		}
		off += opt[1] * 8;
	}
	__u8 mac[8];
	if (!found || ns_mac(*slot, cfg, mac) != 0 || same_mac(mac, opt + 2))
		return TC_ACT_OK;
	__u8 new_opt[8] = { opt[0], opt[1] };
	__builtin_memcpy(new_opt + 2, mac, 6);
	__s64 diff = bpf_csum_diff((__be32 *)opt, 8, (__be32 *)new_opt, 8, 0);
	if (diff < 0 || bpf_skb_store_bytes(skb, off, new_opt, 8, 0) != 0)
		return TC_ACT_OK;
	bpf_l4_csum_replace(skb, ICMP6_OFF + 2, 0, diff, 0);
	return count(C_EGRESS_REWRITTEN, TC_ACT_OK);
}

SEC("classifier")
int carp_egress(struct __sk_buff *skb)
{
#ifdef BROKEN_NO_EGRESS
	return TC_ACT_OK;
#endif
	// The frame's type, not skb->protocol: a packet socket may leave that 0.
	__be16 proto;
	if (bpf_skb_load_bytes(skb, 12, &proto, 2) != 0)
		return TC_ACT_OK;
	if (proto == bpf_htons(ETH_P_ARP))
		return egress_arp(skb);
	if (proto == bpf_htons(ETH_P_IPV6))
		return egress_nd(skb);
	return TC_ACT_OK;
}

// The cost of running any tc program, for the benchmark's baseline
// (Datapath::test_run); never attached.
SEC("classifier")
int carp_baseline(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

// No GPL-only helper is used, so the project licence will do.
char _license[] SEC("license") = "ISC";
