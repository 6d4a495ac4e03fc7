#!/usr/bin/env python3
"""Where the embedded writer's time goes, without a Rust build: the write pattern of
`SqliteEventStore` (a transaction per batch: the `logs` rows, then the per-second keyword counts
upserted in key order) replayed with Python's sqlite3 over the rows of an NDJSON file, one variant
after the other. CPU seconds (process time, so a shared machine's waiting is left out) per part,
and the WAL frames written (`wal_autocheckpoint = 0` keeps every frame in the WAL file).

    log-analyzer generate --rate 0 --count 200000 --seed 21 --late-ratio 1 --late-max 1h --to ndjson:rows.ndjson
    ROWS=200000 BATCH=5000 python3 bench/sqlite_write_pattern.py rows.ndjson ts,ts+tok
    SORTED=1 ...  (the same rows in time order)

Variants join options with '+': ts (the `logs_ts` index), tok (the keyword counts), cache256
(cache_size 256 MiB instead of 64), mmap (mmap_size 1 GiB). Python's own binding overhead is in
every figure alike; compare within a run.
"""
import collections
import json
import os
import re
import sqlite3
import sys
import time

LOGS = """CREATE TABLE logs (ts INTEGER NOT NULL, level INTEGER NOT NULL, service TEXT NOT NULL, user_id TEXT,
 message TEXT NOT NULL, tokens TEXT NOT NULL, attrs TEXT NOT NULL, topic TEXT NOT NULL, "partition" INTEGER NOT NULL,
 "offset" INTEGER NOT NULL, ingested_at INTEGER NOT NULL)"""
TOKENS = """CREATE TABLE log_token_seconds (second INTEGER NOT NULL, token TEXT NOT NULL, topic TEXT NOT NULL,
 service TEXT NOT NULL, events INTEGER NOT NULL, PRIMARY KEY (second, token, topic, service)) WITHOUT ROWID"""
INSERT = "INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?,?,?)"
UPSERT = ("INSERT INTO log_token_seconds VALUES (?,?,?,?,?) "
          "ON CONFLICT DO UPDATE SET events = events + excluded.events")
# The one tokenizer's rule, near enough for a write pattern: lowercased runs of letters, digits, '_'.
TOKEN = re.compile(r"\w+")


def load(path, limit):
    events = []
    with open(path) as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            e = json.loads(line)
            if not isinstance(e, dict) or "message" not in e or not isinstance(e.get("ts"), int):
                continue
            msg = e["message"]
            tokens = list(dict.fromkeys(t for t in TOKEN.findall(msg.lower()) if 2 <= len(t) <= 64))
            attrs = {k: v for k, v in e.items() if k not in ("ts", "level", "service", "message", "user_id")}
            events.append((e["ts"] * 1000, 4 if e.get("level") in ("error", "fatal") else 2, e.get("service", "x"),
                           e.get("user_id"), msg, json.dumps(tokens), json.dumps(attrs), i, tokens))
    return events


def run(variant, events, batch):
    opts = set(variant.split("+"))
    path = f"/tmp/sqlite_write_pattern_{os.getpid()}.db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = NORMAL")
    c.execute("PRAGMA temp_store = MEMORY")
    c.execute("PRAGMA cache_size = %d" % (-262144 if "cache256" in opts else -65536))
    c.execute("PRAGMA wal_autocheckpoint = 0")
    if "mmap" in opts:
        c.execute("PRAGMA mmap_size = 1073741824")
    c.execute(LOGS)
    if "ts" in opts:
        c.execute("CREATE INDEX logs_ts ON logs (ts)")
    if "tok" in opts:
        c.execute(TOKENS)
    spent = collections.Counter()
    for b in range(0, len(events), batch):
        chunk = events[b:b + batch]
        t = time.process_time()
        c.execute("BEGIN IMMEDIATE")
        c.executemany(INSERT, [(e[0], e[1], e[2], e[3], e[4], e[5], e[6], "logs", 0, e[7], 0) for e in chunk])
        spent["logs"] += time.process_time() - t
        if "tok" in opts:
            t = time.process_time()
            counts = collections.Counter()
            for e in chunk:
                second = e[0] // 1_000_000
                for token in e[8]:
                    counts[(second, token, "logs", e[2])] += 1
            rows = [(k[0], k[1], k[2], k[3], n) for k, n in sorted(counts.items())]
            spent["count"] += time.process_time() - t
            t = time.process_time()
            c.executemany(UPSERT, rows)
            spent["upsert"] += time.process_time() - t
        t = time.process_time()
        c.execute("COMMIT")
        spent["commit"] += time.process_time() - t
    pages = c.execute("PRAGMA page_count").fetchone()[0]
    frames = os.path.getsize(path + "-wal") // (4096 + 24)
    c.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    total = sum(spent.values())
    parts = " ".join(f"{k} {spent[k]:.2f}" for k in ("logs", "count", "upsert", "commit"))
    print(f"{variant:24s} {len(events) / total:9.0f} rows per CPU s  CPU {total:6.2f} s ({parts})  "
          f"pages {pages}  WAL frames {frames}", flush=True)


def main():
    path, variants = sys.argv[1], sys.argv[2].split(",")
    events = load(path, int(os.environ.get("ROWS", "200000")))
    if os.environ.get("SORTED"):
        events.sort(key=lambda e: e[0])
    batch = int(os.environ.get("BATCH", "5000"))
    print(f"{len(events)} events, {batch} per transaction{', in time order' if os.environ.get('SORTED') else ''}")
    for variant in variants:
        run(variant, events, batch)


if __name__ == "__main__":
    main()
