//! The OS boundary: raw sockets, rtnetlink and AF_PACKET.
