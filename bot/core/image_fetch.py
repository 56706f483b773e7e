"""Fetching an image prompt from Discord's attachment CDN, defensively.

Members give an image by attaching it to `/imagine` or by pasting its Discord link in the
prompt. Either way the bot downloads a URL a member chose, so:

- only URLs on Discord's attachment hosts (`origins`, scheme + host + port) under an
  attachments path are fetched; anything else is refused before any connection;
- redirects are not followed automatically: one that stays on an allowed origin is followed (at
  most `MAX_REDIRECTS`), one that leaves is refused;
- the size is capped before reading: a Content-Length over `max_bytes` is refused at once, and
  the body is read in chunks and abandoned as soon as it passes `max_bytes`;
- the bytes must decode as PNG, JPEG, WebP or GIF (first frame); the pixel count is checked from
  the header before decoding (a small file that would inflate to gigabytes, a "decompression
  bomb", is refused without being decoded), and decoding runs off the event loop.

Every refusal is an `ImageRefused` with a message for the member; nothing is charged because
this runs before the job is submitted.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import yarl
from PIL import Image, UnidentifiedImageError

from bot.core.threads import Threads
from bot.errors import ImageRefused

__all__ = [
    "DISCORD_ORIGINS",
    "ImageFetcher",
    "find_image_links",
]

DISCORD_ORIGINS = ("https://cdn.discordapp.com", "https://media.discordapp.net")
MAX_REDIRECTS = 3
_PATHS = ("/attachments/", "/ephemeral-attachments/")
_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
_LINK = re.compile(r"(?:(?<=\s)|^)(https?://\S+)")
_CHUNK = 64 * 1024


def find_image_links(text: str) -> tuple[str, list[str]]:
    """Split the links out of a prompt: (the text without them, the links in order)."""
    links = _LINK.findall(text)
    rest = _LINK.sub(" ", text)
    return " ".join(rest.split()), links


@dataclass(frozen=True)
class ImageFetcher:
    """Downloads image prompts from `origins` (default: Discord's CDN hosts).

    `max_bytes` caps the download, `max_pixels` the decoded size, `timeout` the whole fetch in
    seconds; decoding runs on `threads` (the bot's thread helper), off the event loop.
    """

    threads: Threads
    origins: Sequence[str] = DISCORD_ORIGINS
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    timeout: float = 20.0

    def check_url(self, url: str) -> yarl.URL:
        """The URL if it is an attachment on an allowed origin; else `ImageRefused`."""
        try:
            parsed = yarl.URL(url)
        except (ValueError, TypeError):
            parsed = None
        if parsed is None or not parsed.absolute or parsed.user or parsed.password:
            raise ImageRefused(f"`{_shown(url)}` is not a link I can use.")
        allowed = {yarl.URL(origin).origin() for origin in self.origins}
        if parsed.origin() not in allowed or not parsed.path.startswith(_PATHS):
            raise ImageRefused(
                f"`{_shown(url)}` is not an image uploaded to Discord: image prompts must be "
                "attached to the command or linked from Discord's attachment CDN."
            )
        return parsed

    async def fetch(self, url: str) -> Image.Image:
        """Download and decode the image at `url` (RGB); raises `ImageRefused`."""
        target = self.check_url(url)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                data = await self._download(session, target)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ImageRefused(f"I could not download that image ({type(exc).__name__}).") from exc
        return await self.threads.run(self.decode, data)

    async def _download(self, session: aiohttp.ClientSession, url: yarl.URL) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            async with session.get(url, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location", "")
                    url = self.check_url(str(url.join(yarl.URL(location))))
                    continue
                if response.status != 200:
                    raise ImageRefused(
                        f"Discord answered {response.status} for that image; it may have "
                        "expired: upload it again."
                    )
                if response.content_length is not None and response.content_length > self.max_bytes:
                    raise ImageRefused(self._too_big())
                data = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise ImageRefused(self._too_big())
                return bytes(data)
        raise ImageRefused("That image link redirects too many times.")

    def decode(self, data: bytes) -> Image.Image:
        """Bytes to an RGB image, refusing non-images and oversized pictures (see module doc)."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in _FORMATS:
                    raise ImageRefused(
                        f"{image.format} images are not supported; use PNG, JPEG, WebP or GIF."
                    )
                width, height = image.size
                if width * height > self.max_pixels:
                    raise ImageRefused(
                        f"That image is {width}x{height} pixels; the most I take is "
                        f"{self.max_pixels:,} pixels."
                    )
                image.seek(0)
                return image.convert("RGB")
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
            raise ImageRefused("That file is not an image I can read.") from exc

    def _too_big(self) -> str:
        return f"That image is over {self.max_bytes // (1024 * 1024)} MiB; use a smaller file."


def _shown(url: str) -> str:
    """A URL as shown back to the member: short, with no backticks to break the quote."""
    url = url.replace("`", "")
    return url if len(url) <= 80 else url[:77] + "..."
