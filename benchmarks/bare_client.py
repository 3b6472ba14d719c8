"""A bare asyncio client: the same completion requests lm-eval sent, at a fixed concurrency, nothing else.

    python bare_client.py REQUESTS_JSON URL CONCURRENCY   (run with the lm-eval environment's python)

REQUESTS_JSON is a list of request bodies for /v1/completions.  Prints the seconds from the first
request to the last response.  Standalone: it needs only aiohttp (which lm-eval[api] installs).
"""

import asyncio
import json
import sys
import time


async def main(path: str, url: str, concurrency: int) -> None:
    import aiohttp

    with open(path) as handle:
        bodies = json.load(handle)
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def send(body):
            async with gate, session.post(url, json=body) as response:
                response.raise_for_status()
                await response.json()

        start = time.monotonic()
        await asyncio.gather(*(send(body) for body in bodies))
        print(f"{time.monotonic() - start:.3f}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
