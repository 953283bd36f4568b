"""Which forward proxy reaches an upstream, from ``proxy=`` or the environment, as curl does.

The variables are read once, when ``ProxyApp`` is built, as httpx reads them when a client is
built (``trust_env``). For a URL, the first set of these applies:

- ``https_proxy`` / ``HTTPS_PROXY`` for an ``https`` upstream, ``http_proxy`` / ``HTTP_PROXY``
  for an ``http`` one, then ``all_proxy`` / ``ALL_PROXY``. The lowercase form wins, as in curl
  and urllib. ``HTTP_PROXY`` in capitals is ignored when ``REQUEST_METHOD`` is set (a CGI
  environment, where a client's ``Proxy:`` header arrives as ``HTTP_PROXY``: "httpoxy").
- ``no_proxy`` / ``NO_PROXY``: a comma-separated list; an upstream it names is reached
  directly. An entry is ``*`` (every host), a host name matching itself and its subdomains
  (``example.com`` and ``.example.com`` both match ``api.example.com`` and ``example.com``),
  an IP address, or a network in CIDR form (``10.0.0.0/8``, ``::1/128``); any entry may end
  with ``:port`` to apply to that port only. Entries are compared with the URL's host as
  written, never a resolved address: the upstream host is looked up by whoever connects to it.

A proxy URL is ``http://[user:password@]host[:port]`` (a bare ``host:port`` means ``http``, and
the port defaults to 80 for ``http``); ``user:password`` goes in ``Proxy-Authorization: Basic``.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx

from .._errors import ConfigurationError

__all__ = ["Proxy", "choose_proxy", "no_proxy_matches"]


@dataclass(frozen=True)
class Proxy:
    """A forward proxy: where to connect, and the ``Proxy-Authorization`` to send, if any."""

    host: str
    port: int
    #: ``Basic ...`` from the URL's userinfo; never logged.
    authorization: bytes | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """``http://host:port``, without credentials: safe in logs and error messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_url(cls, text: str, source: str) -> Proxy:
        """Parse a proxy URL; ``source`` names where it came from, for the error message.

        Raises:
            ConfigurationError: not an ``http://`` proxy URL with a host.
        """
        raw = text.strip()
        if "://" not in raw:
            raw = "http://" + raw
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigurationError(f"invalid proxy URL in {source} ({exc})") from None
        if url.scheme != "http" or not url.host:
            # Shown without what follows the scheme: it may hold a password.
            raise ConfigurationError(
                f"unsupported proxy URL in {source} (scheme {url.scheme!r}): the upstream "
                "transport supports http:// proxies, which also tunnel https upstreams"
            )
        authorization = None
        if url.userinfo:
            # httpx keeps userinfo percent-encoded; the credentials themselves are decoded.
            user, _, password = url.userinfo.decode("ascii").partition(":")
            token = f"{unquote(user)}:{unquote(password)}".encode()
            authorization = b"Basic " + base64.b64encode(token)
        return cls(url.host, url.port or 80, authorization)


def choose_proxy(
    url: httpx.URL,
    proxy: str | None = None,
    *,
    trust_env: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Proxy | None:
    """The proxy through which to reach ``url``; ``None`` to connect directly.

    An explicit ``proxy`` applies to every URL (``NO_PROXY`` is not consulted, as in httpx);
    otherwise, with ``trust_env``, the environment decides (see the module docstring).

    Raises:
        ConfigurationError: the chosen proxy URL is invalid.
    """
    if proxy is not None:
        return Proxy.from_url(proxy, "proxy=")
    if not trust_env:
        return None
    env = os.environ if environ is None else environ
    names = ["https_proxy", "HTTPS_PROXY"] if url.scheme == "https" else ["http_proxy"]
    if url.scheme == "http" and "REQUEST_METHOD" not in env:
        names.append("HTTP_PROXY")
    names += ["all_proxy", "ALL_PROXY"]
    for name in names:
        value = env.get(name, "").strip()
        if value:
            break
    else:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    if no_proxy_matches(no_proxy, url.host, port):
        return None
    return Proxy.from_url(value, name)


def no_proxy_matches(no_proxy: str, host: str, port: int) -> bool:
    """Whether a ``NO_PROXY`` list names ``host`` (as written in the URL) on ``port``."""
    host = host.strip("[]").rstrip(".").lower()
    address = _ip(host)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address in network:
                return True
            continue
        name = entry.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        inside, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return inside, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    # Several colons without brackets: an IPv6 address (or network) without a port.
    return entry, None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
