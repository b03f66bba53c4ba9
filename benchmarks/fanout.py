"""Fan-out benchmark: one post to 5,000 followers.

1. Mocked I/O, as the seed's benchmark does: each feed write sleeps 100 microseconds. One worker
   writing every follower vs. the pool with 100 followers per worker (Ray actors).
2. Real Redis: the product's FanoutPool (FanoutWorker actors, one pipelined round trip per
   100-follower batch, each write a small script that adds only to a feed that exists) vs. a
   raw pipelined ZADD of the same 5,000 keys from this process, the physical limit, measured in
   the same run. Every follower's feed exists first (fan-out skips missing feeds).

Usage: .venv/bin/python benchmarks/fanout.py [--followers 5000] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from actors.fanout_pool import FanoutPool  # noqa: E402
from dmb.domain.feed import feed_key  # noqa: E402
from dmb.domain.feed_events import ADD  # noqa: E402
from dmb.localstack import LocalStack, scratch_data_dir  # noqa: E402
from dmb.settings import load_settings  # noqa: E402

MOCK_WRITE_SECONDS = 0.0001


class MockWorker:
    """The FanoutWorker call shape with the seed's mocked I/O: each feed write blocks 100 us.

    A blocking sleep, like a synchronous client waiting on the network (asyncio.sleep of 100 us
    returns far sooner and would model no I/O at all). The OS rounds each sleep up a little.
    """

    def write(self, op: str, post_id: int, follower_ids: list[int]) -> int:
        for _ in follower_ids:
            time.sleep(MOCK_WRITE_SECONDS)
        return len(follower_ids)


def _batches(followers: list[int], size: int) -> list[list[int]]:
    return [followers[i : i + size] for i in range(0, len(followers), size)]


async def _timed(run: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def mocked(followers: list[int], batch: int, repeat: int) -> dict[str, float]:
    mock_class: Any = ray.remote(MockWorker)
    single = mock_class.options(num_cpus=0).remote()
    pool = [mock_class.options(num_cpus=0).remote() for _ in range(len(followers) // batch)]
    await asyncio.gather(*[w.write.remote(ADD, [1], []) for w in [single, *pool]])  # warm up

    async def one_worker() -> None:
        await single.write.remote(ADD, [1], followers)

    async def the_pool() -> None:
        await asyncio.gather(
            *[
                w.write.remote(ADD, [1], b)
                for w, b in zip(pool, _batches(followers, batch), strict=True)
            ]
        )

    return {"one_worker_s": await _timed(one_worker, 1), "pool_s": await _timed(the_pool, repeat)}


async def real_redis(
    redis_url: str, followers: list[int], batch: int, workers: int, repeat: int, max_len: int
) -> dict[str, float]:
    client = aioredis.Redis.from_url(redis_url)
    pool = FanoutPool(workers)
    batches = _batches(followers, batch)
    post_ids = iter(range(10**12, 10**12 + 10_000))

    async def raw_pipeline() -> None:
        post = next(post_ids)
        async with client.pipeline(transaction=False) as pipe:
            for user in followers:
                pipe.zadd(feed_key(user), {str(post): post})
                pipe.zremrangebyrank(feed_key(user), 0, -(max_len + 1))
            await pipe.execute()

    async def pool_fanout() -> None:
        await pool.run(ADD, [next(post_ids)], batches)

    async with client.pipeline(transaction=False) as pipe:  # active users: their feeds exist
        for user in followers:
            pipe.zadd(feed_key(user), {"0": 0})
        await pipe.execute()
    await pool_fanout()  # warm up: workers started, connections open
    await raw_pipeline()
    result = {
        "raw_pipeline_s": await _timed(raw_pipeline, repeat),
        "pool_s": await _timed(pool_fanout, repeat),
    }
    await client.aclose()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--followers", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4, help="real-Redis pool size")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = scratch_data_dir("dmb-fanout-")
    followers = list(range(1, args.followers + 1))
    try:
        with LocalStack(load_settings(environ={}, data_dir=folder), with_replica=False) as stack:
            settings = stack.resolved_settings()
            os.environ.update(settings.as_environ())
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
            try:
                mock = asyncio.run(mocked(followers, args.batch, args.repeat))
                assert settings.redis_url is not None
                real = asyncio.run(
                    real_redis(
                        settings.redis_url.get_secret_value(),
                        followers,
                        args.batch,
                        args.workers,
                        args.repeat,
                        settings.feed_max_length,
                    )
                )
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    speedup = mock["one_worker_s"] / mock["pool_s"]
    ratio = real["pool_s"] / real["raw_pipeline_s"]
    print(f"fan-out of one post to {args.followers} followers, batches of {args.batch}")
    print(f"{'run':<44} {'seconds':>9}")
    print(f"{'mocked I/O, one worker writes every follower':<44} {mock['one_worker_s']:>9.3f}")
    print(f"{'mocked I/O, pool (100 followers per worker)':<44} {mock['pool_s']:>9.3f}")
    print(f"{'  speed-up (seed: 5.31 s vs 0.108 s, 49x)':<44} {speedup:>8.1f}x")
    print(f"{'real Redis, raw pipelined ZADD (the limit)':<44} {real['raw_pipeline_s']:>9.3f}")
    print(f"{f'real Redis, FanoutPool ({args.workers} workers)':<44} {real['pool_s']:>9.3f}")
    print(f"{'  pool / raw pipeline (target <= 2x)':<44} {ratio:>8.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "mocked": mock,
                    "real_redis": real,
                    "mocked_speedup": speedup,
                    "real_over_raw": ratio,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
