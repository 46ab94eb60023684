"""Can this process use the lake? Checked once when a `Lake` is made, so a mistake (a mistyped
bucket, wrong credentials, an endpoint that is down, a folder that cannot be created) is one
`LakeError` line before any work, not a traceback deep inside a stage.

An S3 lake is probed with one small listing through a botocore client of its own, with a short
connect timeout and no botocore retries, tried `PROBE_ATTEMPTS` times: an endpoint that is down
answers in about a second, where the lake's own client (made to ride out a long outage) would
retry for a minute. The probe succeeds once per process and configuration; later `Lake`s reuse it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from catalog_enhance.tasks.lake.settings import Settings

PROBE_ATTEMPTS = 2
PROBE_PAUSE_SECONDS = 0.2
PROBE_CONNECT_TIMEOUT_SECONDS = 2
PROBE_READ_TIMEOUT_SECONDS = 10
# Error codes by which S3 says "not with these credentials" (AWS and S3-compatible servers).
CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "AuthorizationHeaderMalformed", "403",
})

_checked: set[tuple] = set()
_sessions: dict = {}  # AWS profile (None: the default chain) -> botocore session
_checked_lock = threading.Lock()


class LakeError(RuntimeError):
    """The lake cannot be used (unreachable, credentials refused, bucket missing, not writable)."""


def check_local_lake(settings: Settings, makedirs: Callable[[str], None]) -> None:
    """Create the lake's folder (a local lake is created on first use) or say why it cannot be."""
    try:
        makedirs(settings.lake_root)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LakeError(f"{settings.lake_url}: cannot create the lake folder {settings.lake_root} ({reason})") from None
    if not os.access(settings.lake_root, os.W_OK | os.X_OK):
        raise LakeError(f"{settings.lake_url}: the lake folder {settings.lake_root} is not writable")


def check_s3_lake(settings: Settings, make_bucket: Callable[[str], None]) -> None:
    """Probe an s3:// lake: reachable, credentials accepted, bucket there. A missing bucket is an
    error unless `settings.create_bucket` (CE_CREATE_BUCKET) asks for it, then `make_bucket` makes it."""
    key = (settings.s3_endpoint_url, settings.lake_root.split("/", 1)[0], settings.aws_access_key_id,
           settings.aws_profile, settings.create_bucket)
    with _checked_lock:
        if key in _checked:
            return
    _probe(settings, make_bucket)
    with _checked_lock:
        _checked.add(key)


def _probe(settings: Settings, make_bucket: Callable[[str], None]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, _, prefix = settings.lake_root.partition("/")
    client = _probe_client(settings)
    endpoint = client.meta.endpoint_url
    lake = settings.lake_url
    last = ""
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        try:
            client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
            return
        except NoCredentialsError:
            raise LakeError(f"{lake}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                            "or AWS_PROFILE)") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            message = error.get("Message") or ""
            if code == "NoSuchBucket":
                if not settings.create_bucket:
                    raise LakeError(f"{lake}: bucket {bucket!r} does not exist "
                                    "(set CE_CREATE_BUCKET=true to create it)") from None
                make_bucket(bucket)
                return
            detail = f"{code}: {message}" if message else code
            if code in CREDENTIAL_CODES:
                raise LakeError(f"{lake}: {endpoint} refused the credentials ({detail})") from None
            if code.startswith("5") or code in {"SlowDown", "InternalError", "ServiceUnavailable"}:
                last = f"; last answer: {detail}"  # the server is there but failing: worth another try
            else:
                raise LakeError(f"{lake}: {endpoint} refused the lake ({detail})") from None
        except BotoCoreError:  # connection refused, DNS, timeouts: nothing answered
            last = ""
        if attempt < PROBE_ATTEMPTS:
            time.sleep(PROBE_PAUSE_SECONDS)
    raise LakeError(f"{lake}: cannot reach the S3 endpoint {endpoint} (tried {PROBE_ATTEMPTS} times{last})")


def _probe_client(settings: Settings):
    import botocore.session
    from botocore.config import Config

    profile = settings.aws_profile if not settings.aws_access_key_id else None
    with _checked_lock:  # one session per profile: it loads the service model once (~0.5 s)
        session = _sessions.get(profile) or _sessions.setdefault(profile, botocore.session.Session(profile=profile))
    config = Config(connect_timeout=PROBE_CONNECT_TIMEOUT_SECONDS, read_timeout=PROBE_READ_TIMEOUT_SECONDS,
                    retries={"total_max_attempts": 1})
    with _checked_lock:  # creating clients from one session is not thread-safe
        return session.create_client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            region_name=session.get_config_variable("region") or "us-east-1",
            config=config,
        )
