"""Every Redis key name optd uses, and the session-id and list-cursor formats.

One place so the layout can be read (and changed) at a glance, and so that user
text can never become part of a key: session ids are server-generated URL-safe
tokens and anything else is answered with `NotFound` before a key is built; slot
names are identifiers chosen by the engine; idempotency keys are hashed.

Layout (the `{...}` part is the Redis Cluster hash tag):

    optd:{<sid>}:meta                          hash: version, inc, tok, meta, labels,
                                               slots, created_at, log
    optd:{<sid>}:slot:<slot>:<token>:<chunk>   string: one chunk of a flat LE array
    optd:{<sid>}:log:<token>:<chunk>           string: one chunk of a logged step's gradient
    optd:{<sid>}:logrec:<token>                string: the logged step's record (engine's)
    optd:{<sid>}:idem:<sha256(scope, key)>     string: an idempotency record (own TTL),
                                               `@<inc>\n<record>` (inc: the session's
                                               incarnation), or `inflight:<fp>:<owner>`
                                               while it runs (a short lease, renewed)
    optd:{<sid>}:lock                          string: advisory step lock (token, PX ttl)
    optd:{<sid>}:owner                         string: "<url> <process id>", the API process
                                               that owns the session (a lease, PX)
    optd:{<sid>}:ack                           string: the write WAIT rides on (60 s)
    optd:{<sid>}:barrier:<version>             hash: worker -> gradient (safetensors), the
                                               open sync round on top of <version>
    optd:{<sid>}:rounds                        hash: <version> -> when the round's first
                                               contribution arrived (epoch seconds)
    optd:{<sid>}:members                       hash: s:<worker> last seen, r:<worker> rounds
                                               contributed, v:<worker> last version (sync)
    optd:{<sid>}:hist                          sorted set by version: the last N history
                                               points (JSON), full resolution
    optd:{<sid>}:hist:tail                     sorted set: every <stride>-th point, whole run
    optd:{<sid>}:hist:stride                   string: the tail's stride (store/history.py)
    optd:{<sid>}:hist:acct                     hash: bytes (the points held, each copy),
                                               charged (to the tenant's max_state_bytes)
    optd:index:{<shard>}                       sorted set, score 0, members = sids
    optd:tenant:{<tenant>}:usage               hash: sessions, bytes (quota counters), gen,
                                               pending, pending_at (for recounts)
    optd:tenant:{<tenant>}:bucket              hash: tokens, at (the rate limiter)

`slots` in meta is JSON `{slot: [dtype, length, nchunks, token, nbytes]}`: the snapshot.
`log`, when present, is JSON `[[token, nchunks, dtype, length, nbytes], ...]`: the steps
logged on top of the snapshot, oldest first (the snapshot is at version - len(log)). `token` is
random per write, so a chunk key is written once and never rewritten: a commit writes
new keys and flips `slots` with a compare-and-set, then unlinks the keys it replaced
(DESIGN §5 "version-suffixed keys"). Every key of a session shares the tag `{<sid>}`, so
a session lives in one cluster slot and its scripts and transactions are single-slot.
The Lua scripts in `lua/` derive chunk keys from `KEYS[1]` (the meta key) with the same
pattern as `chunk_key` below; keep the two in step.

The session index is sharded into `INDEX_SHARDS` sorted sets, each with its own
hash tag, so listing needs no `KEYS`/`SCAN` and no single hot slot.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import zlib

from app.ids import SID_RE, check_new_sid, check_sid, is_sid

__all__ = ["check_new_sid", "check_sid", "is_sid"]  # re-exported: the stores use them as keys.*
from app.problems import InvalidBody
from app.store.base import IdempotencyRecord

PREFIX = "optd"
INDEX_SHARDS = 16

SLOT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
_CURSOR_PREFIX = "v1:"


def check_slot(slot: str) -> str:
    """Slot names come from the engine, never from a user: a bad one is a bug."""
    if not isinstance(slot, str) or SLOT_RE.fullmatch(slot) is None:
        raise ValueError(f"invalid slot name {slot!r}")
    return slot


def session_prefix(sid: str) -> str:
    return f"{PREFIX}:{{{check_sid(sid)}}}:"


def meta_key(sid: str) -> str:
    return session_prefix(sid) + "meta"


def new_token() -> str:
    """Names the chunk keys of one write; random, so concurrent writers never collide."""
    return secrets.token_hex(8)


def chunk_key(sid: str, slot: str, token: str, chunk: int) -> str:
    return f"{session_prefix(sid)}slot:{check_slot(slot)}:{token}:{chunk}"


def log_key(sid: str, token: str, chunk: int) -> str:
    return f"{session_prefix(sid)}log:{token}:{chunk}"


def logrec_key(sid: str, token: str) -> str:
    return f"{session_prefix(sid)}logrec:{token}"


def idem_key(sid: str, key: str, scope: str = "") -> str:
    """`scope` is the caller's tenant: one tenant's keys never meet another's records."""
    raw = key.encode("utf-8", "surrogatepass")
    if scope:
        raw = b"%d:" % len(scope.encode()) + scope.encode() + b":" + raw
    digest = hashlib.sha256(raw).hexdigest()
    return f"{session_prefix(sid)}idem:{digest}"


def lock_key(sid: str) -> str:
    return session_prefix(sid) + "lock"


def owner_key(sid: str) -> str:
    return session_prefix(sid) + "owner"


def barrier_key(sid: str, version: int) -> str:
    return session_prefix(sid) + f"barrier:{int(version)}"


def rounds_key(sid: str) -> str:
    return session_prefix(sid) + "rounds"


def members_key(sid: str) -> str:
    return session_prefix(sid) + "members"


def history_keys(sid: str) -> tuple[str, str, str, str]:
    """The recent points, the downsampled tail, its stride, and the bytes held and
    charged (`store/history.py`)."""
    p = session_prefix(sid)
    return p + "hist", p + "hist:tail", p + "hist:stride", p + "hist:acct"


INFLIGHT = b"inflight:"
VERSIONS_CHANNEL = f"{PREFIX}:versions"  # pub/sub: "<sid> <version>" when a round closes


def usage_key(tenant: str) -> str:
    return f"{PREFIX}:tenant:{{{tenant}}}:usage"


def bucket_key(tenant: str) -> str:
    return f"{PREFIX}:tenant:{{{tenant}}}:bucket"


def index_shard(sid: str) -> int:
    """Stable across processes and Python versions (unlike `hash`)."""
    return zlib.crc32(sid.encode()) % INDEX_SHARDS


def index_key(shard: int) -> str:
    return f"{PREFIX}:index:{{{shard}}}"


def encode_cursor(last_sid: str) -> str:
    """An opaque page cursor: the last session id examined, versioned and base64url'd."""
    raw = (_CURSOR_PREFIX + last_sid).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The last session id of the previous page (None: start); `InvalidBody` if forged."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidBody("invalid list cursor") from None
    if not raw.startswith(_CURSOR_PREFIX) or SID_RE.fullmatch(raw[3:]) is None:
        raise InvalidBody("invalid list cursor")
    return raw[len(_CURSOR_PREFIX) :]


def encode_idempotency(fingerprint: str, response: bytes) -> bytes:
    """`<len>\\n<fingerprint><response>`: binary-safe, no pickle, no JSON escaping of bytes."""
    fp = fingerprint.encode()
    return b"%d\n" % len(fp) + fp + response


def inflight_marker(fingerprint: str, owner: str) -> bytes:
    """What a claim leaves while its request runs; `owner` (random per request) lets the
    commit, the renewal and the release tell this claim from a later one."""
    return INFLIGHT + fingerprint.encode() + b":" + owner.encode()


def idempotency_arg(rec: IdempotencyRecord) -> bytes:
    """ARGV[3] of commit.lua/append.lua: the claim the commit must still hold, then the
    record (the script prefixes the session's incarnation when it stores it)."""
    record = encode_idempotency(rec.fingerprint, rec.response)
    return inflight_marker(rec.fingerprint, rec.owner) + b"\n" + record


def decode_idempotency(value: bytes) -> tuple[str, bytes]:
    if value.startswith(b"@"):  # `@<inc>\n`: the incarnation it belongs to (the scripts check)
        value = value.partition(b"\n")[2]
    head, _, rest = value.partition(b"\n")
    n = int(head)
    return rest[:n].decode(), rest[n:]
