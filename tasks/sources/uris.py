"""Where catalog images come from: resolving, fingerprinting and fetching untrusted `image_uri`s.

A feed row's `image_uri` is input from outside, so it is checked before anything is opened:
only schemes on the allow-list (`Settings.allowed_uri_schemes`, at most file/s3/http/https),
and a local path must resolve (symlinks and `..` followed) inside the feed's folder or one of
`Settings.local_roots`. Every read goes through fsspec; s3:// uses the same endpoint and
credentials as an s3 lake (`Settings.s3_options`).
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import stat
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import fsspec

from catalog_enhance.tasks.imaging.codec import ImageRejected
from catalog_enhance.tasks.lake.settings import Settings
from catalog_enhance.tasks.lake.transient import is_transient_storage_error

SUPPORTED_SCHEMES = ("file", "s3", "http", "https")
HTTP_TIMEOUT_SECONDS = 60
MAX_BACKOFF_SECONDS = 8.0
logger = logging.getLogger(__name__)
_sleep = time.sleep  # the backoff's clock; tests record the delays instead of waiting


class SourceRejected(ImageRejected):
    """The row's image cannot be reached safely (scheme, path, missing, I/O error, too large)."""


@dataclass(frozen=True)
class Source:
    uri: str  # as written in the feed
    scheme: str  # file, s3, http or https
    path: str  # what the filesystem opens: a real absolute path, bucket/key, or the full URL


def feed_folder(feed: str) -> str:
    """The folder (local) or URL prefix (remote) that relative image paths are resolved against."""
    scheme = _scheme(feed)
    if scheme == "file":
        path = unquote(urlsplit(feed).path) if feed.startswith("file:") else feed
        return os.path.realpath(os.path.dirname(os.path.abspath(path)))
    return feed.rsplit("/", 1)[0]


def resolve(uri: str, *, feed_dir: str, settings: Settings) -> Source:
    """Check an untrusted image URI and say what to open; raises `SourceRejected`."""
    uri = uri.strip()
    if "\x00" in uri:
        raise SourceRejected("unsafe_path", f"{uri!r}: contains a NUL byte")
    scheme = _scheme(uri)
    if scheme not in settings.allowed_uri_schemes or scheme not in SUPPORTED_SCHEMES:
        allowed = [s for s in settings.allowed_uri_schemes if s in SUPPORTED_SCHEMES]
        raise SourceRejected(
            "unknown_scheme", f"{_short(uri)}: scheme {scheme!r} is not allowed (allowed: {', '.join(allowed)})"
        )
    parts = urlsplit(uri)
    if scheme == "s3":
        if not parts.netloc or not parts.path.strip("/"):
            raise SourceRejected("fetch_error", f"{_short(uri)}: an s3 URI needs s3://bucket/key")
        return Source(uri, scheme, f"{parts.netloc}{parts.path}")
    if scheme in {"http", "https"}:
        if not parts.netloc:
            raise SourceRejected("fetch_error", f"{_short(uri)}: a URL needs a host")
        return Source(uri, scheme, uri)
    # file:// URI or a plain path.
    if uri.lower().startswith("file:"):
        if parts.netloc not in {"", "localhost"}:
            raise SourceRejected("unsafe_path", f"{_short(uri)}: file URIs on another host are not allowed")
        path = unquote(parts.path)
    else:
        path = uri
    if not path:
        raise SourceRejected("unsafe_path", f"{uri!r}: empty path")
    if _scheme(feed_dir) != "file":
        return _relative_to_remote_feed(uri, path, feed_dir, settings)
    real = os.path.realpath(os.path.join(feed_dir, path))
    roots = [os.path.realpath(feed_dir), *(os.path.realpath(r) for r in settings.local_roots)]
    if not any(_inside(real, root) for root in roots):
        raise SourceRejected(
            "unsafe_path",
            f"{_short(uri)}: resolves to {real}, outside the feed folder and CE_LOCAL_ROOTS",
        )
    return Source(uri, "file", real)


def _relative_to_remote_feed(uri: str, path: str, feed_dir: str, settings: Settings) -> Source:
    """A relative path in a remote feed names an object beside the feed, never above it."""
    if os.path.isabs(path):
        real = os.path.realpath(path)
        if any(_inside(real, os.path.realpath(r)) for r in settings.local_roots):
            return Source(uri, "file", real)
        raise SourceRejected("unsafe_path", f"{_short(uri)}: a local path in a remote feed must be inside CE_LOCAL_ROOTS")
    parts = urlsplit(feed_dir)
    base = parts.path.rstrip("/")
    joined = posixpath.normpath(f"{base}/{path}")
    if not joined.startswith(base + "/"):
        raise SourceRejected("unsafe_path", f"{_short(uri)}: leaves the feed's folder {feed_dir}")
    return resolve(f"{parts.scheme}://{parts.netloc}{joined}", feed_dir=feed_dir, settings=settings)


def filesystem(scheme: str, settings: Settings) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for a scheme (fsspec caches instances, so this is cheap)."""
    if scheme == "s3":
        return fsspec.filesystem("s3", **settings.s3_options())
    if scheme in {"http", "https"}:
        import aiohttp

        return fsspec.filesystem(
            "http", client_kwargs={"timeout": aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)}
        )
    return fsspec.filesystem("file")


def fingerprint(source: Source, settings: Settings) -> str | None:
    """Identify the current content cheaply, without reading it; None when that is not possible.

    local: size + mtime_ns; s3: ETag + size; http(s): ETag / Last-Modified + Content-Length from
    a HEAD request. A missing file or a failed request also gives None (`fetch` then reports it).
    """
    try:
        if source.scheme == "file":
            st = os.stat(source.path)
            return f"file:size={st.st_size},mtime_ns={st.st_mtime_ns}"
        info = filesystem(source.scheme, settings).info(source.path)
    except Exception:
        return None
    if source.scheme == "s3":
        etag = info.get("ETag") or info.get("etag")
        return f"s3:etag={etag},size={info.get('size')}" if etag else None
    etag, modified = info.get("ETag"), info.get("Last-Modified")
    if not (etag or modified):
        return None
    return f"http:etag={etag},last_modified={modified},size={info.get('size')}"


def fetch(source: Source, settings: Settings, max_bytes: int | None = None) -> bytes:
    """Read the image bytes, refusing more than `max_bytes` (default `settings.max_image_bytes`).

    At most max_bytes + 1 bytes are ever read, so a huge or endless source costs nothing more.
    A transient failure (connection refused or reset, timeout, 5xx, 429) is retried
    `settings.fetch_retries` times after full-jitter exponential backoff, one log line a retry;
    then it is a `fetch_error` (never `not_found`: the object may well be there).
    """
    limit = settings.max_image_bytes if max_bytes is None else max_bytes
    attempts = settings.fetch_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(source, settings, limit)
        except _TransientFetchError as exc:
            if attempt == attempts:
                tried = f" (tried {attempts} times)" if attempts > 1 else ""
                raise SourceRejected("fetch_error", f"{_short(source.uri)}: {exc}{tried}") from None
            delay = random.uniform(0, min(MAX_BACKOFF_SECONDS, settings.fetch_backoff_seconds * 2 ** (attempt - 1)))
            logger.warning("fetching %s failed (%s); retry %d of %d in %.1f s",
                           _short(source.uri), exc, attempt, attempts - 1, delay)
            _sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


class _TransientFetchError(Exception):
    """A failure worth another try; the message is the detail."""


def _fetch_once(source: Source, settings: Settings, limit: int) -> bytes:
    try:
        if source.scheme == "file":
            mode = os.stat(source.path).st_mode
            if stat.S_ISDIR(mode):
                raise SourceRejected("not_found", f"{_short(source.uri)}: is a folder, not a file")
            if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
                raise SourceRejected("fetch_error", f"{_short(source.uri)}: not a regular file")
        fs = filesystem(source.scheme, settings)
        # block_size=0: stream http bodies instead of ranged requests the server may not support.
        options = {"block_size": 0} if source.scheme in {"http", "https"} else {}
        chunks: list[bytes] = []
        size = 0
        with fs.open(source.path, "rb", **options) as handle:
            while size <= limit:
                chunk = handle.read(limit + 1 - size)  # a stream may return less than asked
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except SourceRejected:
        raise
    except Exception as exc:
        if is_transient_storage_error(exc):  # fsspec's http wraps a refused connection in FileNotFoundError
            raise _TransientFetchError(_describe(exc)) from None
        if isinstance(exc, FileNotFoundError):
            raise SourceRejected("not_found", f"{_short(source.uri)}: no such file or object") from None
        raise SourceRejected("fetch_error", f"{_short(source.uri)}: {type(exc).__name__}: {exc}") from None
    if size > limit:
        raise SourceRejected("too_large", f"{_short(source.uri)}: more than the limit of {limit} bytes")
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    """The innermost cause, which says what happened (ClientConnectorError: ... refused)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"


def _scheme(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower() if ":" in uri else ""
    # One letter is a Windows drive (C:\...), not a scheme; no scheme is a local path.
    return scheme if len(scheme) > 1 else "file"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _short(uri: str, limit: int = 200) -> str:
    """URIs come from outside: keep details readable whatever their length."""
    return uri if len(uri) <= limit else uri[: limit - 3] + "..."
