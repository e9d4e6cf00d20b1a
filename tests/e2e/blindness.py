"""The blindness search: do secret bytes appear anywhere the platform keeps or moves data?

A *secret* is a byte string (an AES key, or round keys of its schedule). :func:`needles` gives
every form it could take in text or binary: the raw bytes, hex in lower and upper case, and
standard and URL-safe base64 at each of the three alignments a value can have inside a longer
base64 text (only the characters fully determined by the secret's bytes, so a key embedded at any
offset of a larger base64 blob is still found).

A *source* is a named byte string (a ``pg_dump``, a Redis RDB file, a value read from Redis, a log
file, a Redis MONITOR trace). :func:`expand` also opens the containers data is usually wrapped in on
its way: base64 runs (kombu/Celery message bodies are base64 of JSON), hex runs (PostgreSQL
``bytea`` in a dump), the C-style escapes of ``redis-cli`` output — recursively, a few levels deep.

:func:`aes_key_expansion` is FIPS-197 §5.2 (AES-128/192/256), checked against the standard's
Appendix A vectors by the tests: a key schedule left behind by an implementation is the key itself.

Collectors: :func:`pg_sources` (``pg_dump`` plain and ``--inserts``, and every ``bytea`` column's
raw value), :func:`redis_sources` (an uncompressed RDB through ``redis-cli --rdb``, and every key's
value by type through SCAN, plus DUMP), :func:`file_sources` (logs), :func:`monitor_source` (a
``redis-cli monitor`` trace: every command Redis received, so also Celery messages already acked and
deleted, i.e. the task arguments).
"""

from __future__ import annotations

import base64
import binascii
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# --- AES key expansion (FIPS-197 §5.2) -------------------------------------------------------


def _sbox() -> bytes:
    """The AES S-box (FIPS-197 §5.1.1): multiplicative inverse in GF(2^8), then the affine map."""

    def mul(a: int, b: int) -> int:
        p = 0
        while b:
            if b & 1:
                p ^= a
            a = ((a << 1) ^ 0x11B) if a & 0x80 else a << 1
            b >>= 1
        return p

    inverse = [0] * 256
    for a in range(1, 256):
        for b in range(1, 256):
            if mul(a, b) == 1:
                inverse[a] = b
                break
    out = bytearray(256)
    for x in range(256):
        b = inverse[x]
        s = b
        for shift in range(1, 5):
            s ^= ((b << shift) | (b >> (8 - shift))) & 0xFF
        out[x] = s ^ 0x63
    return bytes(out)


SBOX = _sbox()


def aes_key_expansion(key: bytes) -> bytes:
    """The expanded key schedule ``w[0..4(Nr+1))`` as bytes (176, 208 or 240 bytes).
    Round key *r* is bytes ``16r .. 16r+15``; round 0 is the first 16 bytes of the key."""
    nk = len(key) // 4
    if len(key) not in (16, 24, 32):
        raise ValueError("AES keys are 16, 24 or 32 bytes")
    nr = nk + 6
    words = [list(key[4 * i : 4 * i + 4]) for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (nr + 1)):
        temp = list(words[i - 1])
        if i % nk == 0:
            temp = [SBOX[b] for b in temp[1:] + temp[:1]]
            temp[0] ^= rcon
            rcon = ((rcon << 1) ^ 0x11B) if rcon & 0x80 else rcon << 1
        elif nk > 6 and i % nk == 4:
            temp = [SBOX[b] for b in temp]
        words.append([a ^ b for a, b in zip(words[i - nk], temp, strict=True)])
    return bytes(b for w in words for b in w)


# --- secrets and their forms -----------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    name: str
    value: bytes


def key_secrets(name: str, key: bytes) -> list[Secret]:
    """The key itself, its schedule's round-1 key (bytes 16..31) and rounds 1..2 (bytes 16..47)."""
    schedule = aes_key_expansion(key)
    return [
        Secret(name, key),
        Secret(f"{name}/round-1 key", schedule[16:32]),
        Secret(f"{name}/round keys 1..2", schedule[16:48]),
    ]


def _b64_inner(value: bytes, offset: int, alphabet: str) -> bytes:
    """The base64 characters fully determined by ``value`` when it starts ``offset`` (0-2) bytes
    into a 3-byte group of a longer base64 text."""
    data = b"\x00" * offset + value + b"\x00\x00\x00"
    text = base64.b64encode(data) if alphabet == "std" else base64.urlsafe_b64encode(data)
    first = -(-(8 * offset) // 6)  # the first character whose 6 bits all come from value
    last = (8 * (offset + len(value))) // 6  # one past the last such character
    return text[first:last]


def needles(secret: Secret) -> dict[str, bytes]:
    value = secret.value
    forms = {
        "raw": value,
        "hex": value.hex().encode(),
        "HEX": value.hex().upper().encode(),
    }
    for alphabet in ("std", "url"):
        for offset in range(3):
            inner = _b64_inner(value, offset, alphabet)
            forms[f"base64-{alphabet}@{offset}"] = inner
    return forms


# --- sources and what they contain -----------------------------------------------------------

_B64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RUN = re.compile(rb"(?:[0-9a-fA-F]{2}){12,}")
_ESCAPE = re.compile(rb'\\(x[0-9a-fA-F]{2}|["\\nrtab])')
_SIMPLE = {b'"': b'"', b"\\": b"\\", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


def unescape(text: bytes) -> bytes:
    """``redis-cli`` (MONITOR, --raw off) and sdsrepr escapes: ``\\xHH``, ``\\"``, ``\\\\``, ``\\n``…"""

    def one(m: re.Match[bytes]) -> bytes:
        token = m.group(1)
        return bytes([int(token[1:], 16)]) if token[:1] == b"x" else _SIMPLE[token]

    return _ESCAPE.sub(one, text)


def _b64decode(run: bytes) -> bytes | None:
    body = run.rstrip(b"=")
    body = body[: len(body) - len(body) % 4] if len(body) % 4 == 1 else body
    padded = body + b"=" * (-len(body) % 4)
    try:
        if b"-" in body or b"_" in body:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded)
    except (binascii.Error, ValueError):
        return None


def expand(blob: bytes, depth: int = 3) -> Iterator[bytes]:
    """``blob`` and what is encoded inside it: unescaped, base64 runs decoded, hex runs decoded,
    recursively down to ``depth`` levels."""
    yield blob
    if depth <= 0:
        return
    seen: set[bytes] = set()
    inner: list[bytes] = []
    if b"\\" in blob:
        unescaped = unescape(blob)
        if unescaped != blob:
            inner.append(unescaped)
    for m in _B64_RUN.finditer(blob):
        decoded = _b64decode(m.group(0))
        if decoded and len(decoded) >= 12:
            inner.append(decoded)
    for m in _HEX_RUN.finditer(blob):
        inner.append(bytes.fromhex(m.group(0).decode()))
    for part in inner:
        if part in seen:
            continue
        seen.add(part)
        yield from expand(part, depth - 1)


@dataclass(frozen=True)
class Finding:
    secret: str
    form: str
    source: str

    def __str__(self) -> str:
        return f"{self.secret} found as {self.form} in {self.source}"


def search(secrets: Iterable[Secret], sources: dict[str, bytes], depth: int = 3) -> list[Finding]:
    """Every (secret, form, source) where a form of a secret occurs in a source or in what it
    contains (:func:`expand`)."""
    table = [(s.name, form, needle) for s in secrets for form, needle in needles(s).items()]
    found: set[Finding] = set()
    for name, source in sources.items():
        for part in expand(source, depth):
            for secret, form, needle in table:
                if needle in part:
                    found.add(Finding(secret, form, name))
    return sorted(found, key=lambda f: (f.source, f.secret, f.form))


# --- collectors -------------------------------------------------------------------------------


def pg_sources(*, db_name: str, host: str, port: int, user: str = "postgres") -> dict[str, bytes]:
    """A plain ``pg_dump`` (COPY, ``bytea`` as hex), one with ``--inserts``, and the raw bytes of
    every ``bytea`` value of every table."""
    import psycopg

    out: dict[str, bytes] = {}
    base = ["pg_dump", "-h", host, "-p", str(port), "-U", user, "--no-owner", db_name]
    for label, extra in (("pg_dump", []), ("pg_dump --inserts", ["--inserts"])):
        run = subprocess.run([*base[:-1], *extra, base[-1]], capture_output=True, timeout=120)
        if run.returncode:
            raise AssertionError(f"{label} failed: {run.stderr.decode(errors='replace')}")
        out[label] = run.stdout
    with psycopg.connect(host=host, port=port, user=user, dbname=db_name) as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'bytea' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table, column in columns:
            rows = conn.execute(
                f'SELECT "{column}" FROM "{schema}"."{table}" WHERE "{column}" IS NOT NULL'
            ).fetchall()
            out[f"bytea {table}.{column}"] = b"\n".join(bytes(r[0]) for r in rows)
    return out


def redis_sources(*, port: int, directory: Path, host: str = "127.0.0.1") -> dict[str, bytes]:
    """An RDB snapshot written without LZF compression (``redis-cli --rdb``), and every key's value
    read by type (strings, lists, hashes, sets, sorted sets, streams) and by DUMP."""
    import redis

    client = redis.Redis(host=host, port=port)
    client.config_set("rdbcompression", "no")
    rdb = directory / "blindness-dump.rdb"
    run = subprocess.run(
        ["redis-cli", "-h", host, "-p", str(port), "--rdb", str(rdb)], capture_output=True, timeout=60
    )
    if run.returncode:
        raise AssertionError(f"redis-cli --rdb failed: {run.stderr.decode(errors='replace')}")
    out = {"redis rdb": rdb.read_bytes()}
    for db in range(16):
        c = redis.Redis(host=host, port=port, db=db)
        values: list[bytes] = []
        for key in c.scan_iter(count=500):
            kind = c.type(key)
            values.append(key)
            if kind == b"string":
                values.append(c.get(key) or b"")
            elif kind == b"list":
                values.extend(c.lrange(key, 0, -1))
            elif kind == b"hash":
                for k, v in c.hgetall(key).items():
                    values += [k, v]
            elif kind == b"set":
                values.extend(c.smembers(key))
            elif kind == b"zset":
                values.extend(m for m, _ in c.zrange(key, 0, -1, withscores=True))
            elif kind == b"stream":
                for _, fields in c.xrange(key):
                    for k, v in fields.items():
                        values += [k, v]
            dumped = c.dump(key)
            if dumped:
                values.append(dumped)
        if values:
            out[f"redis db{db} values"] = b"\n".join(values)
    return out


def file_sources(paths: Iterable[Path]) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in paths if p.is_file()}


def monitor_source(path: Path) -> dict[str, bytes]:
    """A ``redis-cli monitor`` trace, unescaped (its arguments are printed with sdsrepr escapes)."""
    text = path.read_bytes() if path.exists() else b""
    return {f"{path.name} (every Redis command)": unescape(text)}
