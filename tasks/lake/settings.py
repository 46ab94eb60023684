"""Runtime configuration: one lake URL plus the S3 connection, from the environment.

Everything that touches the lake reads a `Settings`; nothing else reads the environment.
`CE_LAKE_URL` is either a local folder or `s3://bucket/prefix`; both go through fsspec, so
switching is configuration, not code.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # Limits applied to every untrusted catalog image.
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # Local/file:// image URIs must resolve inside one of these folders (the feed's own folder
    # is always allowed); keeps a feed row from reading /etc/shadow or ../../secrets.
    local_roots: list[str] = Field(default_factory=list)
    allowed_uri_schemes: list[str] = Field(default_factory=lambda: ["file", "s3", "http", "https"])
    io_concurrency: int = 16
    batch_size: int = 256
    # A running Dask scheduler (tcp://host:8786): flows fan their tasks out to it
    # (flows/runners.py); unset, they run on local threads.
    dask_address: str | None = None

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
    """Read settings from the environment, turning validation errors into one `ConfigError` line."""
    from pydantic import ValidationError

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(str(first.get("ctx", {}).get("error") or first["msg"])) from None
    settings.check_credentials()
    return settings

