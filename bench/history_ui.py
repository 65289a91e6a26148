"""Benchmark: `rayscale ui` with a day of history of a 100-node cluster.

Writes a synthetic day into a fresh history file through the real
HistoryStore (the same calls the autoscaler's recorder makes), then serves it
with the real `rayscale ui` and measures:

- writing the day (rounds stored as step changes, and every event);
- the cluster page on the server: the history read, the plotly figure built and
  the HTML sent (median of ``--repeat`` GETs, gzip on, as a browser asks);
- the page in Debian's headless Chromium (tests/uibrowser.py): navigation
  until plotly drew the timeline, in a new profile (plotly.min.js fetched and
  compiled) and loaded again in the same profile (plotly.min.js cached), for
  ``--browser-runs`` browsers.

The day: ``--groups`` worker groups sharing ``--nodes`` nodes at most. Demand
follows a daily wave plus noise and changes every ``--every`` seconds on
average; each change moves a group towards what the demand needs: one
launch event (N nodes) and N registrations, or per-node drain + stop
events, as the autoscaler writes them. A round where nothing changed is
never stored (the store drops it), so the file holds only the steps.

    .venv/bin/python bench/history_ui.py                 # 100 nodes, 10 groups, ~30 s
    .venv/bin/python bench/history_ui.py --every 10      # a busier day

Run it inside scripts/loopback-only.sh for the browser part, like the tests.
"""

from __future__ import annotations

import argparse
import gzip
import math
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rayscale.history.store import HistoryStore
from tests.uibrowser import CHROMIUM, open_timeline, serve_ui

DAY_S = 86_400.0


def synthetic_day(path: Path, nodes: int, groups: int, every: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    store = HistoryStore(path)
    t0 = time.time() - DAY_S
    uid = "bench-day"
    store.record_cluster(uid, "bench-100-nodes", "local", t0, "http://127.9.0.2:8265")
    names = [f"group-{i}" for i in range(groups)]
    cap = max(1, nodes // groups)
    running = dict.fromkeys(names, 0)
    events: list[dict[str, object]] = []
    next_id = 0
    stored = rounds = 0
    ts = t0
    while ts < t0 + DAY_S:
        ts += rng.expovariate(1 / every)
        rounds += 1
        wave = 0.5 + 0.45 * math.sin(2 * math.pi * (ts - t0) / DAY_S)
        group = rng.choice(names)
        want = max(0, min(cap, round(cap * wave + rng.gauss(0, cap * 0.15))))
        tasks = max(0, want - running[group]) * 4
        pending: dict[str, int] = {}
        if want > running[group]:
            count = want - running[group]
            ids = [f"{group}-{next_id + i}" for i in range(count)]
            next_id += count
            events.append({"ts": ts, "kind": "launch", "group": group, "reason": "tasks",
                           "message": f"launched {count} x {group} ({', '.join(ids)}) for tasks",
                           "detail": f"demand: {tasks} pending 1-CPU tasks"})
            pending[group] = count
            for i, node in enumerate(ids):
                events.append({"ts": ts + 3 + i * 0.2, "kind": "registered", "group": group,
                               "node": node, "message": f"node {node} registered with Ray"})
        elif want < running[group]:
            for i in range(running[group] - want):
                node = f"{group}-{rng.randrange(next_id or 1)}"
                idle = rng.randint(60, 300)
                for kind, message in (("drain", f"drained {node}"),
                                      ("stop", f"stopping {node} (idle)")):
                    events.append({"ts": ts + i * 0.01, "kind": kind, "group": group,
                                   "node": node, "reason": "idle", "message": message,
                                   "detail": f"idle {idle} s"})
        counts = {(g, s): 0 for g in names for s in ("pending", "terminating", "idle")}
        counts.update({(g, "running"): n for g, n in running.items()})
        counts.update({(g, "pending"): n for g, n in pending.items()})
        demand = {"tasks": tasks, "gangs": 0, "floor": 0, "infeasible": 0}
        stored += store.record_round(uid, ts, counts, demand)
        running[group] = want  # registered ~3 s later: the next round shows them running
        counts.update({(g, "running"): n for g, n in running.items()})
        counts.update({(g, "pending"): 0 for g in names})
        stored += store.record_round(uid, ts + 3, counts, demand | {"tasks": 0})
    store.record_events(uid, events)
    store.close()
    return {"change_rounds": rounds, "stored_rounds": stored, "events": len(events)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--every", type=float, default=30.0,
                        help="mean seconds between demand changes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--browser-runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        history = Path(tmp) / "history.sqlite3"
        started = time.perf_counter()
        day = synthetic_day(history, args.nodes, args.groups, args.every, args.seed)
        wrote = time.perf_counter() - started
        size = history.stat().st_size + sum(
            p.stat().st_size for p in history.parent.glob("history.sqlite3-*"))
        print(f"day: {day['change_rounds']} demand changes -> {day['stored_rounds']} rounds "
              f"stored, {day['events']} events; written in {wrote:.2f} s; file {size / 1e6:.1f} MB")
        with serve_ui(history) as ui:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            times, body, wire = [], b"", 0
            for _ in range(args.repeat):
                request = urllib.request.Request(f"{ui.url}/clusters/1",
                                                 headers={"Accept-Encoding": "gzip"})
                t = time.perf_counter()
                with opener.open(request, timeout=60) as response:
                    raw = response.read()
                times.append(time.perf_counter() - t)
                wire, body = len(raw), gzip.decompress(raw)
            print(f"server: cluster page median {statistics.median(times) * 1000:.0f} ms "
                  f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}) over "
                  f"{args.repeat}; {len(body) / 1e6:.2f} MB HTML, {wire / 1e6:.2f} MB gzipped")
            if not Path(CHROMIUM).exists():
                print("browser: no /usr/bin/chromium (scripts/install.sh installs it)")
                return
            cold, warm = [], []
            for _ in range(args.browser_runs):
                run = open_timeline(f"{ui.url}/clusters/1", reloads=2)
                if run.problems:
                    print("browser problems:", run.problems)
                cold.append(run.load_s)
                warm += run.reloads_s
            points = sum(run.traces.values())
            print(f"browser (headless Chromium): page drawn, first load (new profile, "
                  f"plotly.min.js fetched) median {statistics.median(cold):.2f} s "
                  f"({', '.join(f'{s:.2f}' for s in cold)}); loaded again (plotly.min.js "
                  f"cached) median {statistics.median(warm):.2f} s "
                  f"({', '.join(f'{s:.2f}' for s in warm)}); "
                  f"{len(run.traces)} traces, {points} points")


if __name__ == "__main__":
    main()
