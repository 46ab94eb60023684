"""The lake: one fsspec filesystem plus a root, for a local folder and s3://bucket/prefix alike.

Writes are atomic, so a crash never leaves a half-written object under a real key: locally
bytes go to a temporary key under `_tmp/` and are then renamed onto the final key; on S3 they
are PUT straight to the final key, because S3 itself never shows a partly written object (a PUT,
or a multipart upload's completion, is all-or-nothing). A temporary key plus a server-side copy
and a delete would only cost three more requests per object (bench/NOTES.md).
"""

from __future__ import annotations

import asyncio
import builtins
import io
import os
import uuid
from dataclasses import dataclass, field

import fsspec
from fsspec.asyn import sync
import pyarrow as pa
import pyarrow.parquet as pq

from catalog_enhance.data_contracts.layout import TMP_PREFIX, safe_key
from catalog_enhance.tasks.lake.access import check_local_lake, check_s3_lake
from catalog_enhance.tasks.lake.settings import Settings, load_settings

# GETs `read_many` keeps in flight at once (the HTTP client's connection pool bounds them too).
GETS_IN_FLIGHT = 64
# s3fs reads a whole object with one GET only when told not to split it: otherwise it first
# HEADs the object to see whether it is big enough to fetch in concurrent ranges (>= 50 MB;
# our objects are images and manifests), twice the requests for nothing (bench/NOTES.md).
_ONE_GET = {"max_concurrency": 1}


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
        # A lake that cannot be used is one `LakeError` line here, before any work (tasks/lake/access.py).
        if protocol == "file":
            check_local_lake(settings, lambda path: fs.makedirs(path, exist_ok=True))
        elif protocol == "s3":
            check_s3_lake(settings, fs.mkdir)
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
        if self._protocol == "s3":
            return self.fs.cat_file(self.path(key), **_ONE_GET)
        return self.fs.cat_file(self.path(key))

    def list(self, prefix: str = "") -> list[str]:
        """Keys under a prefix, recursively, relative to the lake root, temporaries excluded."""
        base = self.path(prefix) if prefix else self.root
        # A listing must show what is there now (a commit log is read by listing it): s3fs
        # would otherwise answer from listings it cached earlier in this process.
        self.fs.invalidate_cache(base)
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
        if self._protocol == "s3":
            self.fs.pipe_file(final, data)  # one PUT: atomic on S3 by itself
            return key
        tmp = f"{self.root}/{TMP_PREFIX}/{uuid.uuid4().hex}"
        self.fs.pipe_file(tmp, data)
        try:
            self._commit(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise
        return key

    def write_bytes_if_absent(self, key: str, data: bytes) -> bool:
        """Content-addressed write: skip when the key already exists. Returns True if written.

        On S3 this is one conditional PUT (`If-None-Match: *`): the server refuses it with 412
        when the key exists, so checking and writing is one request instead of a HEAD and a PUT,
        and two writers racing for one key cannot both write. A server that ignores the header
        overwrites the key with the same bytes (keys are content hashes), which is harmless.
        """
        if self._protocol == "s3":
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
            except FileExistsError:
                return False
            return True
        if self.exists(key):
            return False
        self.write_bytes(key, data)
        return True

    def create(self, key: str, data: bytes) -> bool:
        """Put-if-absent: write `data` at `key` only if no object is there; False if one is.

        The compare-and-swap the manifests' commit log rests on: of writers racing for one key,
        exactly one gets True. On S3 one conditional PUT (`If-None-Match: *`; the server answers
        412 when the key exists). On local disk the bytes go to a temporary file that is then
        hard-linked onto the key: `link` is atomic and refuses an existing name, unlike `rename`,
        which would replace it. The S3 store must honour conditional writes (AWS S3 does since
        2024-08, and so do MinIO and moto): one that ignores the header would let two writers win.
        """
        final = self.path(key)
        if self._protocol == "s3":
            try:
                self.fs.pipe_file(final, data, mode="create")
            except FileExistsError:
                return False
            return True
        if self._protocol != "file":
            raise NotImplementedError(f"put-if-absent is not implemented for {self._protocol}:// lakes")
        tmp = f"{self.root}/{TMP_PREFIX}/{uuid.uuid4().hex}"
        self.fs.pipe_file(tmp, data)
        try:
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            self._discard(tmp)
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

    # `builtins.list` from here on: in this class body `list` is the method above.
    def read_many(self, keys: builtins.list[str]) -> dict[str, bytes]:
        """Fetch many keys concurrently: on S3 one GET each, issued together on s3fs's event loop.

        Not `fs.cat(list)`: that first expands every path (a HEAD per key, in case it is a
        folder or a glob), which doubled the requests and the server's work (bench/NOTES.md).
        A missing key raises FileNotFoundError.
        """
        if self._protocol != "s3":  # local files: nothing to overlap
            return {key: self.read_bytes(key) for key in keys}
        return dict(zip(keys, sync(self.fs.loop, self._get_all, [self.path(key) for key in keys])))

    async def _get_all(self, paths: builtins.list[str]) -> builtins.list[bytes]:
        in_flight = asyncio.Semaphore(GETS_IN_FLIGHT)

        async def get(path: str) -> bytes:
            async with in_flight:
                return await self.fs._cat_file(path, **_ONE_GET)

        return await asyncio.gather(*(get(path) for path in paths))


def open_lake(lake_url: str | None = None) -> tuple[Settings, Lake]:
    """The settings (the environment's, with `lake_url` over CE_LAKE_URL when given) and the lake
    they name: how every flow opens the lake."""
    settings = load_settings(**({"lake_url": lake_url} if lake_url else {}))
    return settings, Lake.from_settings(settings)
