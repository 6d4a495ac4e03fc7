#!/usr/bin/env python3
"""Freshness probes for scripts/bench.sh (freshness, scale): produce→visible, one probe at a time.

Usage: freshness_probe.py URL DATABASE_URL RUN_ID PROBES

Each probe is an error event of a service of its own, POSTed to URL/ingest (answered once Kafka
acked it). Two pollers then look for it at the same time, each every POLL_S over a connection
opened before the run, so that neither pays a process start or a connect per look: GET
/stats/errors?service=… until it counts the probe, and a psql session until SELECT finds its row
(the baseline: when is the row committed at all). Prints one line per probe, in ms from just
before the POST:

    POST-answered WRITER-BEGAN SQL-SEES API-COUNTS

WRITER-BEGAN is the row's ingested_at, now() of the transaction that stored it. A last line
"polls API-MS SQL-MS" gives the mean time one look took on each path.
"""

import http.client
import subprocess
import sys
import threading
import time
import urllib.parse

POLL_S = 0.002
DEADLINE_S = 30.0


class Sql:
    """One psql session kept open: a query per line in, its one-line answer out."""

    def __init__(self, url):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-qtA", "-v", "ON_ERROR_STOP=1", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def one(self, query):
        self.proc.stdin.write(query + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("freshness_probe: psql ended")
        return line.strip()


def main():
    url, database_url, run_id, probes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    target = urllib.parse.urlsplit(url)
    api = http.client.HTTPConnection(target.hostname, target.port, timeout=DEADLINE_S)
    poller = Sql(database_url)
    reader = Sql(database_url)
    looks = {"api": [0, 0.0], "sql": [0, 0.0]}

    def look(kind, fn):
        started = time.perf_counter()
        found = fn()
        looks[kind][0] += 1
        looks[kind][1] += time.perf_counter() - started
        return found

    for i in range(1, probes + 1):
        svc = f"fresh-{run_id}-{i}"
        ts = time.time_ns() // 1_000_000
        # The row's own ts to the millisecond: the index on ts finds it without scanning the second.
        row = (
            f"SELECT count(*) FROM logs WHERE ts BETWEEN to_timestamp({ts} / 1000.0) - interval '1 ms' "
            f"AND to_timestamp({ts} / 1000.0) + interval '1 ms' AND service = '{svc}';"
        )
        sql_seen = []
        ready = threading.Event()

        def poll_sql():
            deadline = time.monotonic() + DEADLINE_S
            while True:
                found = look("sql", lambda: poller.one(row) != "0")
                ready.set()
                if found:
                    sql_seen.append(time.time_ns())
                    return
                if time.monotonic() > deadline:
                    return
                time.sleep(POLL_S)

        thread = threading.Thread(target=poll_sql)
        thread.start()
        ready.wait()
        body = f'{{"level":"error","service":"{svc}","message":"probe","ts":{ts}}}'
        t0 = time.time_ns()
        api.request("POST", "/ingest", body=body)
        answer = api.getresponse()
        answer.read()
        if answer.status != 202:
            sys.exit(f"freshness_probe: POST /ingest answered {answer.status}")
        acked = time.time_ns()
        query = f"/stats/errors?window=10s&service={svc}&at={ts // 1000 + 1}"

        def counted():
            api.request("GET", query)
            reply = api.getresponse()
            return b'"total":1' in reply.read()

        deadline = time.monotonic() + DEADLINE_S
        while not look("api", counted):
            if time.monotonic() > deadline:
                sys.exit(f"freshness_probe: probe {svc} not visible in /stats/errors after {DEADLINE_S:.0f} s")
            time.sleep(POLL_S)
        visible = time.time_ns()
        thread.join()
        if not sql_seen:
            sys.exit(f"freshness_probe: probe {svc} not in PostgreSQL after {DEADLINE_S:.0f} s")
        began = int(reader.one(f"SELECT (extract(epoch FROM ingested_at) * 1e9)::bigint FROM logs WHERE service = '{svc}';"))
        ms = lambda t: (t - t0) / 1e6  # noqa: E731
        print(f"{ms(acked):.1f} {ms(began):.1f} {ms(sql_seen[0]):.1f} {ms(visible):.1f}", flush=True)
        time.sleep(0.05)
    mean = lambda kind: looks[kind][1] / max(looks[kind][0], 1) * 1e3  # noqa: E731
    print(f"polls {mean('api'):.2f} {mean('sql'):.2f}")


if __name__ == "__main__":
    main()
