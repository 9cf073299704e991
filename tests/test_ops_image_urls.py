"""Image URLs: off by default (clear 422), and when on, never fetched from non-public addresses (SSRF).

No test here sends a packet anywhere but 127.0.0.1: refused URLs are refused before any connection
(the transport is booby-trapped to prove it), name resolution is faked (``socket.getaddrinfo``
monkeypatched; ``localhost`` resolves from /etc/hosts), pinning and redirects run over
``httpx.MockTransport``, and the size/time limits over a loopback server with the address check
relaxed for that one fetcher.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from rmserve.api.fetch import ImageFetcher, forbidden_reason
from rmserve.errors import InvalidInput
from tests.conftest import data_url, png_bytes
from tests.serving import asgi_client, make_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PNG = png_bytes((6, 6), (10, 200, 30))
PUBLIC = "93.184.216.34"  # a public address; nothing ever connects to it (mock transports only)
FAKE_DNS = {
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "rebind.example": ["127.0.0.1"],
    "v6loop.example": ["::1"],
    "mixed.example": [PUBLIC, "192.168.0.7"],  # one bad record is enough to refuse
    "images.example": [PUBLIC],
}
_real_getaddrinfo = socket.getaddrinfo


def _fake_getaddrinfo(host, port, *args, **kwargs):
    if host in FAKE_DNS:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in FAKE_DNS[host]
        ]
    if host == "localhost":
        return _real_getaddrinfo(host, port, *args, **kwargs)  # /etc/hosts, no DNS query
    # literal addresses only (no DNS query ever leaves this machine)
    return _real_getaddrinfo(host, port, *args, **{**kwargs, "flags": socket.AI_NUMERICHOST})


@pytest.fixture
def no_network(monkeypatch):
    """Fake DNS, and a transport that fails the test if anything tries to connect."""
    attempts = []

    def trap(self, request):
        attempts.append(str(request.url))
        raise AssertionError(f"connection attempted to {request.url}")

    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo)
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", trap)
    return attempts


FORBIDDEN_URLS = [
    "http://127.0.0.1/cat.png",
    "http://127.1.2.3:8080/cat.png",
    "http://10.0.0.5/cat.png",
    "http://172.16.3.4/cat.png",
    "http://172.31.255.1/cat.png",
    "http://192.168.1.10/cat.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/cat.png",
    "http://[::ffff:127.0.0.1]/cat.png",
    "http://[fe80::1]/cat.png",
    "http://[fd00::1]/cat.png",
    "http://0.0.0.0/cat.png",
    "http://[::]/cat.png",
    "http://224.0.0.1/cat.png",
    "http://100.64.0.1/cat.png",
    "http://2130706433/cat.png",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/cat.png",  # ... in hex
    "https://localhost/cat.png",
    "http://localhost:8000/cat.png",
    "http://internal.example/cat.png",
    "http://metadata.example/latest/meta-data/iam",
    "https://rebind.example/cat.png",
    "http://v6loop.example/cat.png",
    "http://mixed.example/cat.png",
]


def _item(**fields):
    return {"prompt": "What is shown?", "response": "A green square.", **fields}


async def test_urls_are_off_by_default_with_a_clear_422(no_network):
    async with asgi_client(make_app()) as client:
        for url in ("https://images.example/cat.png", "HTTP://images.example/cat.png"):
            r = await client.post("/v1/score", json={"items": [_item(images=[url])]})
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert (error["param"], error["code"]) == ("items.0.images.0", "url_not_allowed")
            assert "--allow-image-urls" in error["message"]
    assert no_network == []


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
async def test_non_public_addresses_are_refused_before_connecting(no_network, url):
    async with asgi_client(make_app(allow_image_urls=True)) as client:
        body = {"items": [_item(), _item(images=[data_url(PNG), url])]}
        r = await client.post("/v1/score", json=body)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("items.1.images.1", "url_forbidden"), error
        assert "public addresses" in error["message"]
        r = await client.post(
            "/v1/compare", json={"prompt": "p", "images": [url], "response_a": "a", "response_b": "b"}
        )
        assert r.status_code == 422 and r.json()["error"]["param"] == "images.0", r.text
    assert no_network == []


def test_address_classification():
    for address in ("127.0.0.1", "10.9.9.9", "172.20.0.1", "192.168.5.5", "169.254.169.254", "::1", "0.0.0.0", "::",
                    "fe80::1%eth0", "fc00::1", "ff02::1", "239.1.1.1", "::ffff:10.0.0.1", "2002:a00:1::",
                    "64:ff9b::7f00:1", "100.100.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1"):
        assert forbidden_reason(address) is not None, address
    for address in (PUBLIC, "8.8.8.8", "2606:4700:4700::1111"):
        assert forbidden_reason(address) is None, address


def _fetcher(handler, resolver=None, **kw) -> tuple[ImageFetcher, list]:
    lookups = []

    def resolve(host, port):
        lookups.append(host)
        return (resolver or (lambda h: FAKE_DNS.get(h, [h])))(host)  # literals resolve to themselves

    fetcher = ImageFetcher(max_bytes=kw.pop("max_bytes", 10_000), resolver=resolve,
                           transport=httpx.MockTransport(handler), **kw)
    return fetcher, lookups


def test_connection_is_pinned_to_the_vetted_address():
    """DNS rebinding: the second answer (loopback) is never asked for; the request goes to the first."""
    seen = []
    answers = iter([[PUBLIC], ["127.0.0.1"], ["127.0.0.1"]])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG)

    fetcher, lookups = _fetcher(handler, resolver=lambda host: next(answers))
    assert fetcher.fetch("https://images.example/cat.png?x=1", param="images.0") == PNG
    (request,) = seen
    assert request.url.host == PUBLIC and request.url.scheme == "https" and request.url.query == b"x=1"
    assert request.headers["host"] == "images.example"
    assert request.extensions["sni_hostname"] == "images.example"  # TLS and the certificate check use the name
    assert lookups == ["images.example"]

    fetcher, _ = _fetcher(handler)
    fetcher.fetch("http://images.example:8080/cat.png", param="images.0")
    assert seen[-1].url.port == 8080 and seen[-1].headers["host"] == "images.example:8080"


def test_redirects_are_vetted_at_every_hop():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/start":
            return httpx.Response(302, headers={"location": "/next"})
        if request.url.path == "/next":
            return httpx.Response(301, headers={"location": "http://metadata.example/latest/meta-data/"})
        if request.url.path == "/loop":
            return httpx.Response(307, headers={"location": "/loop"})
        if request.url.path == "/literal":
            return httpx.Response(302, headers={"location": "http://169.254.169.254/"})
        return httpx.Response(200, content=PNG)

    fetcher, lookups = _fetcher(handler)
    with pytest.raises(InvalidInput) as info:
        fetcher.fetch("http://images.example/start", param="items.0.images.0")
    assert (info.value.param, info.value.code) == ("items.0.images.0", "url_forbidden")
    assert lookups == ["images.example", "images.example", "metadata.example"]
    for path, code in (("/literal", "url_forbidden"), ("/loop", "too_many_redirects")):
        with pytest.raises(InvalidInput) as info:
            fetcher.fetch(f"http://images.example{path}", param="p")
        assert info.value.code == code


def test_size_limits_and_bad_answers():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/declared":
            return httpx.Response(200, headers={"content-length": "999999"}, content=b"")
        if request.url.path == "/streamed":
            return httpx.Response(200, content=iter([b"x" * 4000] * 10))  # chunked, no length
        if request.url.path == "/missing":
            return httpx.Response(404)
        return httpx.Response(200, content=b"")

    fetcher, _ = _fetcher(handler, max_bytes=10_000)
    for path, code in (("/declared", "image_too_large"), ("/streamed", "image_too_large"),
                       ("/missing", "image_fetch_failed"), ("/empty", "invalid_image")):
        with pytest.raises(InvalidInput) as info:
            fetcher.fetch(f"http://images.example{path}", param="images.2")
        assert (info.value.param, info.value.code) == ("images.2", code), path
    for url, code in (("http://user:pw@images.example/x", "invalid_url"), ("http://", "invalid_url"),
                      ("http://nowhere.invalid/x", "image_fetch_failed")):
        with pytest.raises(InvalidInput) as info:
            _fetcher(handler, resolver=lambda h: (_ for _ in ()).throw(socket.gaierror("no such host")))[0].fetch(
                url, param="images.0")
        assert info.value.code == code, url


# ── a real fetch over loopback (the address check relaxed for this fetcher only) ───────────────


class _Images(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.end_headers()
            for _ in range(40):  # drips for ~8 s unless the client hangs up
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            return
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args):
        pass


@contextmanager
def _loopback_images() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_time_limit_covers_the_whole_fetch():
    with _loopback_images() as base:
        fetcher = ImageFetcher(max_bytes=10_000, timeout_s=1.0, check=lambda address: None)
        start = time.monotonic()
        with pytest.raises(InvalidInput) as info:
            fetcher.fetch(base + "/slow", param="images.0")
        assert info.value.code == "image_fetch_timeout"
        assert time.monotonic() - start < 2.5  # timeout_s, plus at most one read's own timeout


async def test_allowed_url_is_fetched_and_scored_like_the_inline_image():
    app = make_app(allow_image_urls=True)
    with _loopback_images() as base:
        async with asgi_client(app) as client:
            service = app.state.rmserve.service
            assert service.images.fetcher is not None
            service.images.fetcher.check = lambda address: None  # loopback is our test server here
            by_url = await client.post("/v1/score", json={"items": [_item(images=[base + "/cat.png"])]})
            inline = await client.post("/v1/score", json={"items": [_item(images=[data_url(PNG)])]})
    assert by_url.status_code == 200, by_url.text
    assert by_url.json()["items"][0]["reward"] == inline.json()["items"][0]["reward"]


def test_proxies_from_the_environment_are_ignored(monkeypatch):
    """A proxy would make the connection instead of us (past the address check): HTTP(S)_PROXY / ALL_PROXY
    in the server's environment must not be used. The "proxy" here answers with a different image."""
    proxied = []
    other = png_bytes((6, 6), (250, 0, 0))

    class _Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            proxied.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(other)))
            self.end_headers()
            self.wfile.write(other)

        def log_message(self, *args):
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        with _loopback_images() as base:
            fetcher = ImageFetcher(max_bytes=10_000, timeout_s=5.0, check=lambda address: None)
            assert fetcher.fetch(base + "/cat.png", param="images.0") == PNG
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert proxied == []
