"""Memory: the bot's resident size against model file + the context's KV + the RAM cache cap + 200 MB.

Measured in a process of its own (``python -m bench.memory``), so that nothing the other benchmarks
loaded counts: it starts the app with default settings, has eight conversations answer at once,
then reads VmRSS (and the peak, VmHWM) from ``/proc/self/status``. The context's KV is computed
from the model's metadata at F16: 2 x layers x KV heads x head size x 2 bytes a token, for
``n_ctx`` tokens per sequence times ``PARLEY_ENGINE__PARALLEL`` sequences (``CONCURRENCY`` slots on
an engine without it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from bench.common import FACTUAL, Options, Row, Vocabulary, ask, bench_settings, client, rss_bytes, running

MB = 1024 * 1024
SLACK = 200 * MB


async def measure(options: Options) -> dict[str, float]:
    settings = bench_settings(options, "memory", max_tokens=256)
    engine = settings.engine
    assert engine.model_path is not None
    vocabulary = Vocabulary(engine.model_path)
    per_token = vocabulary.kv_bytes_per_token()
    vocabulary.close()
    sequences = int(getattr(engine, "parallel", engine.concurrency))
    cache_cap = int(getattr(engine, "kv_cache_mb", 0) or 0) * MB
    async with running(settings) as (_app, url), client() as http:
        await asyncio.gather(*(ask(http, url, p, max_tokens=48 if options.quick else 96) for p in FACTUAL))
        rss, peak = rss_bytes()
    model = engine.model_path.stat().st_size
    kv = per_token * engine.n_ctx * sequences
    return {
        "rss": rss,
        "peak": peak,
        "model": model,
        "kv": kv,
        "cache": cache_cap,
        "bound": model + kv + cache_cap + SLACK,
        "sequences": sequences,
        "n_ctx": engine.n_ctx,
    }


async def run(options: Options) -> list[Row]:
    command = [sys.executable, "-m", "bench.memory"]
    if options.bot_threads is not None:
        command += ["--bot-threads", str(options.bot_threads)]
    if options.quick:
        command.append("--quick")
    child = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"python -m bench.memory exited with {child.returncode}")
    m = json.loads(out.decode().strip().splitlines()[-1])
    parts = (
        f"model {m['model'] / MB:.0f} + KV {m['kv'] / MB:.0f} ({m['sequences']} x {m['n_ctx']} tok) "
        f"+ RAM cache {m['cache'] / MB:.0f} + 200 MB"
    )
    return [
        Row("memory", "bound", m["bound"] / MB, "MB", note=parts),
        Row("memory", "resident size (VmRSS)", m["rss"] / MB, "MB", "<= bound", m["rss"] <= m["bound"]),
        Row("memory", "peak resident size (VmHWM)", m["peak"] / MB, "MB", "<= bound", m["peak"] <= m["bound"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="resident size of the bot with eight conversations")
    parser.add_argument("--bot-threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parley-bench-memory-") as tmp:
        options = Options(args.quick, 2, args.bot_threads, runs=1, openai_url=None, workdir=Path(tmp))
        print(json.dumps(asyncio.run(measure(options))))


if __name__ == "__main__":
    main()
