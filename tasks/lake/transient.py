"""Transient or not: which storage errors are worth retrying: an enhancement chunk (the flow's
retry condition; a retried chunk resumes, `tasks.enhance.chunk`) or an image fetch
(`tasks.sources.uris.fetch`: a refused connection is a `fetch_error` retried, not `not_found`)."""

from __future__ import annotations

import errno

# errno values of an OSError that say "try again": busy/throttled (s3fs maps SlowDown and 503
# to EBUSY), a remote or I/O error (500 -> EREMOTEIO, unknown codes -> EIO), timeouts, resets.
_TRANSIENT_ERRNOS = frozenset({
    errno.EBUSY, errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
    errno.ECONNABORTED, errno.EPIPE, errno.ENETUNREACH, errno.EHOSTUNREACH,
    getattr(errno, "EREMOTEIO", errno.EIO),
})
_TRANSIENT_MODULES = ("botocore", "aiohttp", "urllib3", "requests", "httpx")


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    status = getattr(response, "status_code", None) or getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def is_transient_storage_error(exc: BaseException | None) -> bool:
    """True for errors worth retrying (connections, timeouts, throttling, server errors), looked
    for along the exception's causes; False for deterministic ones (missing object, access
    denied, a corrupt image, a failed tile, a contract violation)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if type(exc) is OSError and exc.errno in _TRANSIENT_ERRNOS:
            return True
        if type(exc).__module__.split(".")[0] in _TRANSIENT_MODULES:
            status = _http_status(exc)  # None: no response at all (connection, DNS, read timeout)
            if status is None or status >= 500 or status == 429:
                return True
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return False
