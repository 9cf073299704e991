"""Fetch image URLs without letting the server be turned against its own network (SSRF).

    ImageFetcher(max_bytes=, timeout_s=, max_redirects=).fetch(url, param="items.0.images.1") -> bytes

Used only with ``--allow-image-urls`` (off by default: a URL is then a 422 ``url_not_allowed``).
Every refusal is an ``InvalidInput`` (422) naming the field:
- ``invalid_url``: not http(s), credentials in the URL, no host;
- ``url_forbidden``: the host resolves (every A/AAAA record is checked, before any connection) to
  an address that is not publicly routable: private (10/8, 172.16/12, 192.168/16, fc00::/7),
  loopback, link-local (169.254/16, cloud metadata services included; fe80::/10), multicast,
  reserved, unspecified (0.0.0.0, ::), shared (100.64/10), documentation ranges, or an IPv4 address
  embedded in IPv6 (mapped, 6to4, Teredo, NAT64) that is any of those. One bad record refuses the
  URL, so a name with both a public and a private address cannot be used either;
- ``image_fetch_failed`` / ``image_fetch_timeout`` / ``image_too_large`` / ``too_many_redirects``.

DNS rebinding: the connection goes to the vetted address itself (the URL's host is replaced by it;
the ``Host`` header, TLS SNI and the certificate check keep the name), so a second DNS answer
cannot swap in another address between the check and the connection. Redirects are followed by
hand, each hop resolved and vetted again, at most ``max_redirects``. Proxy settings from the
environment are ignored (a proxy would make the connection instead of us). The body is streamed
and cut at ``max_bytes`` (a larger Content-Length is refused before reading); ``timeout_s`` bounds
the whole fetch, redirects included (a read already waiting may overrun it by at most its own
timeout). Fetching runs in the preprocessing pool, like decoding.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from rmserve.errors import InvalidInput

Resolver = Callable[[str, int], list[str]]
AddressCheck = Callable[[str], str | None]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_USER_AGENT = "rmserve-image-fetch"


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA), in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def forbidden_reason(address: str) -> str | None:
    """Why ``address`` must not be fetched from (e.g. "loopback"), or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = forbidden_reason(str(embedded))
            if reason is not None:
                return f"{reason} (embedded in {ip})"
    for attribute, reason in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attribute):
            return reason
    if not ip.is_global:
        return "not publicly routable"
    return None


@dataclass(frozen=True)
class _Target:
    url: httpx.URL  # the host replaced by the vetted address
    host_header: str
    sni: str | None  # the name for TLS (None for a literal address)


class ImageFetcher:
    """``resolver``, ``check`` and ``transport`` are for tests (a fake DNS, a loopback server, no network)."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        resolver: Resolver = resolve,
        check: AddressCheck = forbidden_reason,
        transport: httpx.BaseTransport | None = None,
    ):
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.resolver = resolver
        self.check = check
        self.transport = transport

    def fetch(self, url: str, *, param: str | None = None) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        with httpx.Client(transport=self.transport, trust_env=False, follow_redirects=False) as client:
            for _ in range(self.max_redirects + 1):
                target = self.vet(url, param=param)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _timeout(self.timeout_s, param)
                request = client.build_request(
                    "GET",
                    target.url,
                    headers={"Host": target.host_header, "Accept": "image/*", "User-Agent": _USER_AGENT},
                    extensions={"sni_hostname": target.sni} if target.sni else None,
                    timeout=httpx.Timeout(remaining),
                )
                try:
                    response = client.send(request, stream=True)
                except httpx.TimeoutException:
                    raise _timeout(self.timeout_s, param) from None
                except httpx.HTTPError as exc:
                    raise InvalidInput(
                        f"image URL could not be fetched: {type(exc).__name__}: {exc}",
                        param=param,
                        code="image_fetch_failed",
                    ) from None
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = str(httpx.URL(url).join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        raise InvalidInput(
                            f"image URL answered HTTP {response.status_code}, not 200",
                            param=param,
                            code="image_fetch_failed",
                        )
                    return self._read(response, deadline, param)
                finally:
                    response.close()
        raise InvalidInput(
            f"image URL redirected more than {self.max_redirects} times", param=param, code="too_many_redirects"
        )

    def vet(self, url: str, *, param: str | None = None) -> _Target:
        """Check ``url`` and resolve its host; the pinned target, or InvalidInput (never a connection)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise InvalidInput(f"image URL is not a valid URL: {exc}", param=param, code="invalid_url") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidInput("image URL must be http:// or https:// with a host", param=param, code="invalid_url")
        if parsed.userinfo:
            raise InvalidInput("image URL must not carry credentials", param=param, code="invalid_url")
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = self.resolver(host.strip("[]"), port)
        except (OSError, UnicodeError) as exc:
            raise InvalidInput(
                f"image URL host {host!r} does not resolve: {exc}", param=param, code="image_fetch_failed"
            ) from None
        if not addresses:
            raise InvalidInput(f"image URL host {host!r} has no address", param=param, code="image_fetch_failed")
        for address in addresses:
            try:
                reason = self.check(address)
            except ValueError:
                reason = "not an IP address"
            if reason is not None:
                raise InvalidInput(
                    f"image URL host {host!r} resolves to {address}, a {reason} address: this server fetches "
                    "images only from public addresses",
                    param=param,
                    code="url_forbidden",
                )
        literal = _is_literal(host)
        default_port = parsed.port is None or parsed.port == (443 if parsed.scheme == "https" else 80)
        bracketed = f"[{host}]" if ":" in host else host
        return _Target(
            url=parsed.copy_with(host=addresses[0].split("%", 1)[0]),
            host_header=bracketed if default_port else f"{bracketed}:{port}",
            sni=None if literal or parsed.scheme != "https" else host,
        )

    def _read(self, response: httpx.Response, deadline: float, param: str | None) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(self.max_bytes, param)
        chunks, size = [], 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise _too_large(self.max_bytes, param)
                if time.monotonic() > deadline:
                    raise _timeout(self.timeout_s, param)
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise _timeout(self.timeout_s, param) from None
        except httpx.HTTPError as exc:
            raise InvalidInput(
                f"image URL body could not be read: {type(exc).__name__}", param=param, code="image_fetch_failed"
            ) from None
        if not size:
            raise InvalidInput("image URL returned an empty body", param=param, code="invalid_image")
        return b"".join(chunks)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _timeout(seconds: float, param: str | None) -> InvalidInput:
    return InvalidInput(f"image URL took longer than {seconds:g}s to fetch", param=param, code="image_fetch_timeout")


def _too_large(limit: int, param: str | None) -> InvalidInput:
    return InvalidInput(f"image URL body is over the limit of {limit} bytes", param=param, code="image_too_large")


__all__ = ["ImageFetcher", "forbidden_reason", "resolve"]
