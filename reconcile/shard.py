"""Shard I/N: a tenant belongs to shard `int(md5(id).hexdigest()[:8], 16) % N`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from reconcile.errors import ConfigError

MAX_SHARDS = 10_000


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ConfigError(f"shard count must be between 1 and {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard index must be between 0 and {self.count - 1}, got {self.index}")

    @classmethod
    def parse(cls, text: str, where: str) -> Shard:
        index, sep, count = text.strip().partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ConfigError(f"{where} must look like I/N (for example 0/4), got {text!r}")
        try:
            return cls(int(index), int(count))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Shard:
        """A Kubernetes Indexed Job sets JOB_COMPLETION_INDEX; the manifest sets the count."""
        index = env.get("JOB_COMPLETION_INDEX", "").strip()
        count = env.get("RECONCILE_SHARD_COUNT", "").strip()
        if not count:
            if index and index != "0":
                raise ConfigError("JOB_COMPLETION_INDEX is set but RECONCILE_SHARD_COUNT is not")
            return cls()
        if not count.isdigit():
            raise ConfigError(f"RECONCILE_SHARD_COUNT must be a positive integer, got {count!r}")
        if not index:
            index = "0" if count == "1" else ""
        if not index:
            raise ConfigError("RECONCILE_SHARD_COUNT is set but JOB_COMPLETION_INDEX is not (use --shard I/N "
                              "outside an Indexed Job)")
        if not index.isdigit():
            raise ConfigError(f"JOB_COMPLETION_INDEX must be a non-negative integer, got {index!r}")
        try:
            return cls(int(index), int(count))
        except ConfigError as exc:
            raise ConfigError(f"JOB_COMPLETION_INDEX/RECONCILE_SHARD_COUNT: {exc}") from None

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        return self.count == 1

    def contains(self, tenant_id: str) -> bool:
        bucket = int(hashlib.md5(tenant_id.encode("utf-8")).hexdigest()[:8], 16)
        return bucket % self.count == self.index

    def sql_predicate(self, column: str = "id") -> str:
        """The same rule in SQL, on the id's UTF-8 bytes like Python: md5() of a text hashes it in
        the server's encoding, which for a LATIN1 or WIN1252 database puts tenants in other shards."""
        if self.whole:
            return "TRUE"
        bucket = f"('x' || lpad(substr(md5(convert_to({column}, 'UTF8')), 1, 8), 16, '0'))::bit(64)::bigint"
        return f"mod({bucket}, {int(self.count)}) = {int(self.index)}"  # mod(): no literal % in bound SQL
