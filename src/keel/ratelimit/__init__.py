"""Client-side rate limiting for the Messages API, in one process or shared by many through Redis.

The API limits requests, input tokens and output tokens per minute and model class, as continuously refilled
buckets. `RateLimiter` keeps the same three buckets on the client side: before a request is sent, `acquire`
reserves one request, the (estimated) input tokens and an output allowance, all or nothing, waiting until they
fit; after the response, `reconcile` turns the reservation into the real usage (or `release` refunds a request
that failed). `observe` learns the real limits and remaining budget from the `anthropic-ratelimit-*` response
headers, slows down on 429/529 (honouring `retry-after`) and speeds up again with each success.

Backends: `LocalBackend` (the default; threads and asyncio of one process) and
`keel.ratelimit.redis_backend.RedisBackend` (every process with the same `KEEL_REDIS_URL` and limiter name
shares one budget; needs the `redis` extra). `connect_backend()` picks between them. See docs/ratelimit.md.
"""

from .._exceptions import AcquireTimeout, LimiterUnavailable, LimitExceedsCapacity
from .backends import REDIS_URL_ENV, Backend, LocalBackend, connect_backend
from .buckets import Amounts, BucketOp, BucketSpec, BucketView
from .estimate import MEDIA_TOKENS, estimate_input_tokens
from .limiter import Permit, RateLimiter
from .limits import API_WINDOW, Adaptation, Limits, Reservation, model_class
from .urls import redact_url

__all__ = [
    "API_WINDOW",
    "MEDIA_TOKENS",
    "REDIS_URL_ENV",
    "AcquireTimeout",
    "Adaptation",
    "Amounts",
    "Backend",
    "BucketOp",
    "BucketSpec",
    "BucketView",
    "LimitExceedsCapacity",
    "LimiterUnavailable",
    "Limits",
    "LocalBackend",
    "Permit",
    "RateLimiter",
    "Reservation",
    "connect_backend",
    "estimate_input_tokens",
    "model_class",
    "redact_url",
]
