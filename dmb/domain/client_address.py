"""Which address a request comes from, for the per-IP bucket: one rule for HTTP and gRPC.

Behind `DMB_TRUSTED_PROXY_HOPS` proxies that each append the address they saw to
`X-Forwarded-For` (an ALB: 1), the client is the entry that many places from the right; the
entries left of it are whatever the client chose to send and are never trusted. With no
trusted proxies (the default: an NLB that preserves the client address, or a local run), the
client is the peer of the connection. A request that carries fewer entries than there are
trusted proxies did not come through them: its peer is used.
"""

from __future__ import annotations

UNKNOWN = "unknown"


def client_address(forwarded_for: str | None, peer: str | None, trusted_hops: int) -> str:
    """The client's address from the X-Forwarded-For value and the connection's peer host."""
    if trusted_hops and forwarded_for:
        entries = [entry.strip() for entry in forwarded_for.split(",")]
        entries = [entry for entry in entries if entry]
        if len(entries) >= trusted_hops:
            return entries[-trusted_hops]
    return peer or UNKNOWN


def grpc_peer_host(peer: str | None) -> str | None:
    """The host of a gRPC peer string (`ipv4:10.0.0.7:51234`, `ipv6:[::1]:51234`)."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return host.removeprefix("[").removesuffix("]").removeprefix("%5B").removesuffix("%5D")
    return None  # unix sockets and the like: no address to hold a bucket for
