"""API keys as the emulator may show them: a fingerprint, never the key itself."""

from __future__ import annotations

import hashlib
from functools import lru_cache


@lru_cache(maxsize=1024)
def key_id(api_key: str) -> str:
    """A stable, non-secret fingerprint of an API key (`key_` and 12 hex digits) for logs and bookkeeping."""
    return "key_" + hashlib.blake2b(api_key.encode(), digest_size=6, person=b"keel-api-key").hexdigest()
