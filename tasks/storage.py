"""The lake: one fsspec filesystem plus a root, for a local folder and s3://bucket/prefix alike.

Writes are atomic: bytes go to a temporary key under `_tmp/` and are then moved onto the
final key (a rename locally, a server-side copy on S3, whose PUT/COPY is all-or-nothing), so
a crash never leaves a half-written object under a real key.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from catalog_enhance.data_contracts.layout import TMP_PREFIX, safe_key
from catalog_enhance.tasks.settings import Settings, load_settings


@dataclass
class Lake:
    """A handle on the lake; cheap to create, safe to share between threads."""

    fs: fsspec.AbstractFileSystem
    root: str
    url: str = ""
    _protocol: str = field(default="file", repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Lake":
        settings = settings or load_settings()
        protocol = settings.lake_scheme
        options = settings.storage_options()
        if protocol == "file":
            options["auto_mkdir"] = True
        fs = fsspec.filesystem(protocol, **options)
        root = settings.lake_root
        if protocol == "file":
            fs.makedirs(root, exist_ok=True)
        elif protocol == "s3":
            bucket = root.split("/", 1)[0]
            if not fs.exists(bucket):
                fs.mkdir(bucket)
        return cls(fs=fs, root=root, url=settings.lake_url, _protocol=protocol)

    @classmethod
    def from_url(cls, url: str, **overrides) -> "Lake":
        return cls.from_settings(load_settings(lake_url=url, **overrides))

    # -- paths -------------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The filesystem path of a key; the key is validated so input cannot leave the lake."""
        return f"{self.root}/{safe_key(key)}"

    @property
    def root_uri(self) -> str:
        return f"{self._protocol}://{self.root}"

    def uri(self, key: str) -> str:
        """A URI a person or another tool can use (file:///... or s3://...)."""
        return f"{self._protocol}://{self.path(key)}"

    # -- reads -------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def list(self, prefix: str = "") -> list[str]:
        """Keys under a prefix, recursively, relative to the lake root, temporaries excluded."""
        base = self.path(prefix) if prefix else self.root
        if not self.fs.exists(base):
            return []
        keys = []
        root = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        for path in self.fs.find(base):
            key = self.fs._strip_protocol(path)[len(root):]
            if not key.startswith(TMP_PREFIX + "/"):
                keys.append(key)
        return sorted(keys)

    def read_table(self, key: str, schema: pa.Schema | None = None) -> pa.Table:
        with self.fs.open(self.path(key), "rb") as handle:
            return pq.read_table(handle, schema=schema)

    # -- writes ------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> str:
        """Write atomically; returns the key."""
        final = self.path(key)
        tmp = f"{self.root}/{TMP_PREFIX}/{uuid.uuid4().hex}"
        self.fs.pipe_file(tmp, data)
        try:
            self._commit(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise
        return key

    def write_bytes_if_absent(self, key: str, data: bytes) -> bool:
        """Content-addressed write: skip when the key already exists. Returns True if written."""
        if self.exists(key):
            return False
        self.write_bytes(key, data)
        return True

    def write_table(self, key: str, table: pa.Table) -> str:
        """Write a Parquet table atomically (schema metadata, e.g. schema_version, is kept)."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        return self.write_bytes(key, buffer.getvalue())

    def delete(self, key: str) -> None:
        if self.exists(key):
            self.fs.rm_file(self.path(key))

    def _commit(self, tmp: str, final: str) -> None:
        parent = final.rsplit("/", 1)[0]
        if self._protocol == "file":
            self.fs.makedirs(parent, exist_ok=True)
        self.fs.mv(tmp, final)

    def _discard(self, tmp: str) -> None:
        try:
            self.fs.rm_file(tmp)
        except FileNotFoundError:
            pass

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Fetch many keys concurrently (s3fs issues the requests together)."""
        paths = {self.fs._strip_protocol(self.path(k)): k for k in keys}
        found = self.fs.cat(list(paths), on_error="raise")
        return {paths[self.fs._strip_protocol(p)]: data for p, data in found.items()}
