"""The one loopback check every setting and component uses, and the one URL origin shown.

A host is loopback when it is ``localhost`` or an IPv4/IPv6 address of the loopback
range (all of ``127.0.0.0/8``, ``::1``), bracketed or not, in any letter case.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback_host", "public_origin"]


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


def public_origin(url: str) -> str:
    """Return ``scheme://host[:port]`` of ``url``: no credentials, path, query or fragment.

    What ``/status`` may show of a configured endpoint. An IPv6 host keeps its brackets
    (``http://[::1]:8000``), so the origin stays a valid URL.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"
