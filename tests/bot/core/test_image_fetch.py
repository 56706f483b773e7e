"""The image-prompt fetcher against a local server: hosts, redirects, size caps, decoding."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from bot.core.flags import image_strength
from bot.core.image_fetch import ImageFetcher, find_image_links
from bot.core.threads import Threads
from bot.errors import ImageRefused


def png(size: tuple[int, int] = (32, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def cdn() -> AsyncIterator[str]:
    """A CDN on 127.0.0.1: an image, redirects in and out, a streamed body with no length."""
    served: list[str] = []

    async def image(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(body=png(), content_type="image/png")

    async def inside(request: web.Request) -> web.Response:
        raise web.HTTPFound("/attachments/1/2/a.png")

    async def outside(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://example.invalid/attachments/1/2/a.png")

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to check up front
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"\0" * 8192)
        return response

    app = web.Application()
    app.router.add_get("/attachments/1/2/a.png", image)
    app.router.add_get("/attachments/1/2/in.png", inside)
    app.router.add_get("/attachments/1/2/out.png", outside)
    app.router.add_get("/attachments/1/2/endless.png", endless)
    app.router.add_get("/elsewhere/a.png", image)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_fetches_an_attachment(cdn: str, threads: Threads) -> None:
    image = await ImageFetcher(threads, origins=(cdn,)).fetch(f"{cdn}/attachments/1/2/a.png")
    assert image.size == (32, 16) and image.mode == "RGB"


async def test_follows_a_redirect_only_within_the_cdn(cdn: str, threads: Threads) -> None:
    fetcher = ImageFetcher(threads, origins=(cdn,))
    assert (await fetcher.fetch(f"{cdn}/attachments/1/2/in.png")).size == (32, 16)
    with pytest.raises(ImageRefused, match="not an image uploaded to Discord"):
        await fetcher.fetch(f"{cdn}/attachments/1/2/out.png")


async def test_refuses_other_paths_and_hosts(cdn: str, threads: Threads) -> None:
    fetcher = ImageFetcher(threads, origins=(cdn,))
    for url in (f"{cdn}/elsewhere/a.png", "https://cdn.discordapp.com/attachments/1/2/a.png",
                "file:///etc/passwd", "not a url"):
        with pytest.raises(ImageRefused):
            await fetcher.fetch(url)


async def test_stops_reading_past_the_cap(cdn: str, threads: Threads) -> None:
    fetcher = ImageFetcher(threads, origins=(cdn,), max_bytes=100_000)
    with pytest.raises(ImageRefused, match="over"):
        await fetcher.fetch(f"{cdn}/attachments/1/2/endless.png")


def test_decode_refuses_bombs_and_other_formats(threads: Threads) -> None:
    fetcher = ImageFetcher(threads, max_pixels=1000)
    with pytest.raises(ImageRefused, match="pixels"):
        fetcher.decode(png((100, 100)))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="BMP")
    with pytest.raises(ImageRefused, match="BMP"):
        fetcher.decode(buffer.getvalue())
    with pytest.raises(ImageRefused, match="not an image"):
        fetcher.decode(b"GIF89a but not really")


def test_links_are_split_out_of_the_prompt() -> None:
    text, links = find_image_links("https://cdn.x/a.png a red fox https://cdn.x/b.png --iw 2")
    assert text == "a red fox --iw 2"
    assert links == ["https://cdn.x/a.png", "https://cdn.x/b.png"]


@pytest.mark.parametrize(("weight", "strength"), [(None, 0.7), (0, 1.0), (1, 0.7), (2, 0.4),
                                                  (3, 0.1)])
def test_image_weight_maps_to_strength(weight: float | None, strength: float) -> None:
    assert image_strength(weight) == pytest.approx(strength)
