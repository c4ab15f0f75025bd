"""Who the client is: the address of the request's peer, or, when that peer is one of the
reverse proxies named in FORESIGHT_TRUSTED_PROXIES, the client its X-Forwarded-For names.

One function for the audit log (services.Actor), the login lockout (django-axes'
AXES_CLIENT_IP_CALLABLE) and the API's throttles, so all three see the same address.

X-Forwarded-For is parsed by django-ipware. The trust decision is made here first, because
ipware's own proxy options (proxy_count, proxy_trusted_ips) look only at the header's
entries and never at the peer: a client that reached the console directly could name any
address. Here the header counts only when the peer is a trusted proxy, and then its
right-most address is the client (the one the proxy saw; whatever the client wrote to the
left of it is not believed). One proxy in front is the documented deployment.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from ipware import get_client_ip as ipware_client_ip


def clean_ip(raw: str | None) -> str | None:
    """A well-formed IP address in canonical form, or None."""
    if not raw:
        return None
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        return None


@lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def peer_is_trusted_proxy(peer: str | None) -> bool:
    proxies = tuple(getattr(settings, "FORESIGHT_TRUSTED_PROXIES", ()) or ())
    if not peer or not proxies:
        return False
    address = ipaddress.ip_address(peer)
    return any(address.version == net.version and address in net for net in _networks(proxies))


def client_ip(request) -> str | None:
    """The client's address as a string (None if the request has none that parses)."""
    peer = clean_ip(request.META.get("REMOTE_ADDR"))
    if not peer_is_trusted_proxy(peer):
        return peer
    forwarded, _routable = ipware_client_ip(request, proxy_order="left-most", proxy_count=0, strict=False,
                                            request_header_order=["HTTP_X_FORWARDED_FOR"])
    return clean_ip(forwarded) or peer
