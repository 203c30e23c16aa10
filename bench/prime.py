#!/usr/bin/env python3
"""Sends every token of a file once to 127.0.0.1:PORT and checks each gets 200.

Used by run.sh to fill a filter's token cache before the "distinct tokens" run of a
listener with a cache, so that run measures cache hits only (and to prove every token in
the set is accepted). Several keep-alive connections in threads: the server, not this
client, is the bottleneck.

Usage: prime.py PORT TOKEN_FILE [--conns 8]
"""
import argparse
import http.client
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("tokens")
    ap.add_argument("--conns", type=int, default=8)
    args = ap.parse_args()
    with open(args.tokens) as f:
        tokens = [line.strip() for line in f if line.strip()]
    bad: list[str] = []
    lock = threading.Lock()

    def worker(part: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        for tok in part:
            try:
                conn.request("GET", "/", headers={"Authorization": "Bearer " + tok})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
                status = f"{type(e).__name__}"
            if status != 200:
                with lock:
                    bad.append(str(status))
        conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(tokens[i:: args.conns],))
               for i in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    if bad:
        print(f"prime.py: {len(bad)}/{len(tokens)} tokens not answered 200 on port {args.port}"
              f" (first: {bad[:5]})", file=sys.stderr)
        return 1
    print(f"primed {len(tokens)} tokens in {took:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
