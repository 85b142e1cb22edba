"""Which network addresses an outside party may steer Persona's requests to. Pure.

A URL the operator configured may name any host (a feed on the intranet is theirs to choose);
a redirect or a name that resolves elsewhere must not lead Persona to an address that only
its own host or network can reach: loopback (the embedded broker, the API itself), link-local
(cloud metadata services at 169.254.169.254), private and shared networks, unspecified,
multicast and reserved ranges. IPv4 addresses written as IPv6 (`::ffff:10.0.0.1`, 6to4,
NAT64's well-known prefix) are judged as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def internal_address(text: str) -> bool:
    """Whether `text` (an IP address, IPv6 possibly with a `%zone`) is not a public unicast
    address; True also for text that is no IP address (refuse what cannot be judged)."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour
        if carried is None and address in _NAT64:
            carried = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if carried is not None:
            return internal_address(str(carried))
    return not address.is_global or address.is_multicast


def ip_literal(host: str) -> bool:
    """Whether a URL's host is an IP address written out (no name to resolve)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    return True
