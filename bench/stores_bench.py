"""keel's state on the shared servers against the embedded default, side by side.

1. Batch ledger throughput, SQLite file against PostgreSQL (the machine's server, in a schema of the bench's own,
   dropped afterwards): a job of `--requests` requests (default 100,000) in one shard, as the runner drives it:
   `add_inputs` (inputs recorded per second), then `record_results` of a result for every request, arriving in a
   shuffled order (results stored per second: the headline), then `items_in_order`, the results file's read
   (rows read back per second). Each result is a succeeded message of about 600 bytes, priced, as the runner
   stores it.
2. Claim latency of the at-most-once tool store, `SQLiteStore` (a file, `synchronous=FULL`: each claim is on disk)
   against `RedisStore` (the machine's Redis, under a prefix of the bench's own, removed afterwards): µs per
   `claim` of a new key, median and p99 of `--claims` claims after a tenth as many warm-up claims.

Run: `.venv/bin/python bench/stores_bench.py` (`--requests`, `--claims`, `--database-url`, `--redis-url`,
`--json FILE`). Figures only: no targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import redis
from targets import Result, add_arguments, finish, info

from keel import Usage
from keel.batch import SQLiteLedger, SQLLedger
from keel.batch.inputs import Item
from keel.batch.ledger import ItemResult
from keel.batch.postgres import PostgresLedger
from keel.stores import RedisStore, SQLiteStore, ToolCallStore

MODEL = "claude-haiku-5-5"


def message(n: int) -> str:
    return json.dumps(
        {
            "id": f"msg_{n:024d}",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": f"Answer {n}: " + "lorem ipsum dolor sit amet " * 12}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 14, "output_tokens": 60, "cache_read_input_tokens": 0},
        },
        separators=(",", ":"),
    )


def items(count: int) -> list[Item]:
    params = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "Question"}]}
    return [Item(n + 1, f"r{n}", json.dumps({**params, "metadata": {"n": n}})) for n in range(count)]


def results(count: int) -> Iterator[ItemResult]:
    order = list(range(count))
    random.Random(7).shuffle(order)  # results arrive in no particular order
    usage = Usage(input_tokens=14, output_tokens=60)
    for n in order:
        yield ItemResult(f"r{n}", "succeeded", "succeeded", stop_reason="end_turn", model=MODEL, usage=usage,
                         cost_batch=0.00016, cost_standard=0.00032, message_json=message(n))  # fmt: skip


def per_second(count: int, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return count / (time.perf_counter() - started)


def ledger_rates(ledger: SQLLedger, count: int) -> tuple[float, float, float]:
    """(inputs recorded/s, results stored/s, rows read back/s) for a job of `count` requests."""
    job = "job_bench"
    ledger.create_job(job, "bench.jsonl", {})
    inputs = items(count)
    recorded = per_second(count, lambda: ledger.add_inputs(job, inputs))
    (shard,) = ledger.plan_shards(job, count, 1 << 40)
    ledger.mark_submitting(shard.shard_id, "bench/0/0", 60)
    ledger.mark_submitted(shard.shard_id, "msgbatch_bench", "bench/0/0")
    outcomes = results(count)
    stored = per_second(count, lambda: ledger.record_results(shard.shard_id, outcomes, "bench/0/0"))
    read = per_second(count, lambda: sum(1 for _ in ledger.items_in_order(job)))
    return recorded, stored, read


def postgres_rates(url: str, count: int) -> tuple[float, float, float]:
    schema = f"keel_bench_{uuid.uuid4().hex}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        ledger = PostgresLedger(f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}")
        try:
            return ledger_rates(ledger, count)
        finally:
            ledger.close()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def claim_micros(store: ToolCallStore, count: int) -> list[float]:
    for n in range(count // 10):
        store.claim(f"warm-{n}", tool="bench", owner="bench", lease=60)
    samples = []
    for n in range(count):
        started = time.perf_counter_ns()
        store.claim(f"key-{n}", tool="bench", owner="bench", lease=60)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def redis_claims(url: str, count: int) -> list[float]:
    prefix = f"keel-bench:tools:{uuid.uuid4().hex}"
    store = RedisStore(url, prefix=prefix)
    try:
        return claim_micros(store, count)
    finally:
        store.close()
        client = redis.Redis.from_url(url)
        for keys in _batched(client.scan_iter(match=f"{prefix}:*", count=1000), 1000):
            client.delete(*keys)
        client.close()


def _batched(keys: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="requests in the ledger's job")
    parser.add_argument("--claims", type=int, default=5_000, help="timed claims per store")
    parser.add_argument(
        "--database-url", default=os.environ.get("KEEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--redis-url", default=os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    add_arguments(parser)
    args = parser.parse_args()
    out: list[Result] = []
    print(f"python {platform.python_version()}; {args.requests:,}-request job in one shard")
    print(f"{'ledger':<12}{'inputs/s':>12}{'results/s':>12}{'read/s':>12}")
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        sqlite = SQLiteLedger(Path(tmp) / "batches.sqlite3")
        rates = {"sqlite": ledger_rates(sqlite, args.requests)}
        sqlite.close()
    rates["postgresql"] = postgres_rates(args.database_url, args.requests)
    for name, (recorded, stored, read) in rates.items():
        print(f"{name:<12}{recorded:>12,.0f}{stored:>12,.0f}{read:>12,.0f}")
        out.append(info(f"{name} ledger: results stored, {args.requests:,}-request job", stored, "results/s", 0))
        out.append(info(f"{name} ledger: inputs recorded", recorded, "inputs/s", 0))
    print(f"\nµs per claim of a new key, {args.claims:,} claims")
    print(f"{'store':<12}{'median':>10}{'p99':>10}")
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        sqlite_store = SQLiteStore(Path(tmp) / "tools.sqlite3")
        claims = {"sqlite": claim_micros(sqlite_store, args.claims)}
        sqlite_store.close()
    claims["redis"] = redis_claims(args.redis_url, args.claims)
    for name, samples in claims.items():
        median, p99 = statistics.median(samples), statistics.quantiles(samples, n=100)[98]
        print(f"{name:<12}{median:>10.1f}{p99:>10.1f}")
        out.append(info(f"{name} tool store: claim, median", median, "µs", 1))
        out.append(info(f"{name} tool store: claim, p99", p99, "µs", 1))
    return finish(args, out)


if __name__ == "__main__":
    sys.exit(main())
