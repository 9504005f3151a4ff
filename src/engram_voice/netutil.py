"""The one loopback check every setting and component uses.

A host is loopback when it is ``localhost`` or an IPv4/IPv6 address of the loopback
range (all of ``127.0.0.0/8``, ``::1``), bracketed or not, in any letter case.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str | None) -> bool:
    """Return True when ``host`` (a bind address, URL host or ICE address) stays on this machine."""
    if not host:
        return False
    bare = host.strip().strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:  # a DNS or mDNS name (<uuid>.local) may resolve anywhere
        return False
