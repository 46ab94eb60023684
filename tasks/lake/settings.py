"""Runtime configuration: one lake URL plus the S3 connection, from the environment.

Everything that touches the lake reads a `Settings`; nothing else reads the environment.
`CE_LAKE_URL` is either a local folder or `s3://bucket/prefix`; both go through fsspec, so
switching is configuration, not code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from catalog_enhance.tasks.catalog.domains import LabelDomains, check_filters

SUPPORTED_LAKE_SCHEMES = ("file", "s3", "memory")


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CE_", extra="ignore")

    lake_url: str = Field(default="lake", description="Local folder or s3://bucket/prefix")
    # Standard AWS variables are honoured; CE_S3_ENDPOINT_URL wins over AWS_ENDPOINT_URL(_S3).
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    )
    aws_access_key_id: str | None = Field(default=None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: str | None = Field(default=None, validation_alias="AWS_SECRET_ACCESS_KEY")
    aws_session_token: str | None = Field(default=None, validation_alias="AWS_SESSION_TOKEN")
    aws_profile: str | None = Field(default=None, validation_alias="AWS_PROFILE")
    # A missing lake bucket is an error (a typo must not create one) unless this asks for it.
    create_bucket: bool = False

    # Limits applied to every untrusted catalog image.
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # Local/file:// image URIs must resolve inside one of these folders (the feed's own folder
    # is always allowed); keeps a feed row from reading /etc/shadow or ../../secrets.
    local_roots: list[str] = Field(default_factory=list)
    allowed_uri_schemes: list[str] = Field(default_factory=lambda: ["file", "s3", "http", "https"])
    io_concurrency: int = 16
    # A transient fetch failure (connection refused or reset, timeout, 5xx, 429) is retried this
    # many times, after full-jitter exponential backoff from `fetch_backoff_seconds` (capped at 8 s).
    fetch_retries: int = Field(default=3, ge=0, le=10)
    fetch_backoff_seconds: float = Field(default=0.5, ge=0)
    batch_size: int = 256
    # A running Dask scheduler (tcp://host:8786): flows fan their tasks out to it
    # (flows/runners.py); unset, they run on local threads.
    dask_address: str | None = None

    # The catalog's label vocabulary (tasks/catalog/domains.py): CE_DOMAINS, JSON such as
    # {"column": "style", "x": ["model shot"], "y": ["packshot"]}: the style transform's X -> Y;
    # CE_GAN_FILTERS: the GAN's training images (unset: domain Y; empty: every image).
    domains: LabelDomains = Field(default_factory=LabelDomains)
    gan_filters: str | None = None
    # Nightly housekeeping: `_tmp/` objects older than this are a killed run's leftovers.
    tmp_max_age_hours: float = Field(default=24.0, ge=0)
    # Per-stage time limits in seconds over flows/limits.py's defaults, e.g. {"train-model": 3600}.
    timeouts: dict[str, float] = Field(default_factory=dict)

    @field_validator("gan_filters")
    @classmethod
    def _check_gan_filters(cls, value: str | None) -> str | None:
        return check_filters(value)

    @field_validator("lake_url")
    @classmethod
    def _check_lake_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("CE_LAKE_URL is empty")
        scheme = urlsplit(value).scheme
        if len(scheme) > 1 and scheme not in SUPPORTED_LAKE_SCHEMES:
            raise ValueError(
                f"CE_LAKE_URL={value!r}: scheme {scheme!r} is not supported "
                f"(use a local folder or one of {', '.join(s + '://' for s in SUPPORTED_LAKE_SCHEMES)})"
            )
        if scheme == "s3" and not urlsplit(value).netloc:
            raise ValueError(f"CE_LAKE_URL={value!r}: an s3 URL needs a bucket (s3://bucket/prefix)")
        return value

    @property
    def lake_scheme(self) -> str:
        scheme = urlsplit(self.lake_url).scheme
        return scheme if len(scheme) > 1 else "file"

    @property
    def lake_root(self) -> str:
        """The lake root as fsspec wants it: an absolute path for local lakes, bucket/prefix for s3."""
        if self.lake_scheme == "file":
            path = self.lake_url.removeprefix("file://")
            return str(Path(path).expanduser().resolve())
        parts = urlsplit(self.lake_url)
        return f"{parts.netloc}{parts.path}".rstrip("/")

    def storage_options(self) -> dict:
        """fsspec keyword arguments for the lake's filesystem."""
        return self.s3_options() if self.lake_scheme == "s3" else {}

    def s3_options(self) -> dict:
        """s3fs keyword arguments from the configured endpoint and credentials, whatever the lake
        is (s3:// catalog images are read with the same configuration as an s3 lake)."""
        options: dict = {}
        if self.aws_access_key_id:
            options["key"] = self.aws_access_key_id
            options["secret"] = self.aws_secret_access_key
            if self.aws_session_token:
                options["token"] = self.aws_session_token
        elif self.aws_profile:
            options["profile"] = self.aws_profile
        if self.s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        return options

    def check_credentials(self) -> None:
        """Fail with one clear line when an s3 lake has no usable credentials."""
        if self.lake_scheme != "s3":
            return
        if self.aws_access_key_id and not self.aws_secret_access_key:
            raise ConfigError("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is missing")
        if self.aws_access_key_id or self.aws_profile:
            return
        import botocore.session

        if botocore.session.get_session().get_credentials() is None:
            raise ConfigError(
                f"CE_LAKE_URL={self.lake_url} needs S3 credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE); CE_S3_ENDPOINT_URL for a non-AWS server"
            )


def load_settings(**overrides) -> Settings:
    """Read settings from the environment, turning every problem into one `ConfigError` line that
    names the variable and its value, e.g. `CE_MAX_IMAGE_PIXELS='abc': not an integer`."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        settings = Settings(**overrides)
    except SettingsError as exc:  # a list/dict variable that is not JSON (pydantic-settings parses those)
        field = re.search(r'field "([^"]+)"', str(exc))
        name = field.group(1) if field else ""
        reason = f"not valid JSON ({exc.__cause__})" if isinstance(exc.__cause__, json.JSONDecodeError) else str(exc)
        raise ConfigError(f"{_described(name, overrides)}: {reason}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        reason = _REASONS.get(first["type"]) or str(first.get("ctx", {}).get("error") or first["msg"])
        if name == "lake_url":  # its validator already names the variable and the value
            raise ConfigError(reason) from None
        raise ConfigError(f"{_described(name, overrides, first.get('input'))}: {reason}") from None
    settings.check_credentials()
    return settings


# pydantic error types -> what the user reads after the variable's name and value.
_REASONS = {
    "int_parsing": "not an integer",
    "int_from_float": "not an integer",
    "float_parsing": "not a number",
    "bool_parsing": "not true or false",
    "list_type": "not a JSON list",
    "dict_type": "not a JSON object",
}


def _described(field: str, overrides: dict, value: object = None) -> str:
    """`CE_NAME='value'` for a setting from the environment, `name=value` for one passed in code."""
    if field in overrides:
        return f"{field}={overrides[field]!r}"
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    names = (list(alias.choices) if isinstance(alias, AliasChoices) else [alias]) if alias else \
        [f"{Settings.model_config.get('env_prefix', '')}{field}".upper()]
    environ = {key.upper(): raw for key, raw in os.environ.items()}
    for name in names:
        if isinstance(name, str) and name.upper() in environ:
            return f"{name.upper()}={environ[name.upper()]!r}"
    return f"{names[0]}={value!r}" if value is not None else str(names[0])
