#!/usr/bin/env python3
"""Failover time of a three-member cluster on this machine, over several runs.

    cargo build --release && python3 benches/failover.py [RUNS] [-- SERVER OPTIONS...]

Each run starts three members of a fresh cluster (the release binary, its defaults, data in a
temporary directory, all on 127.0.0.1), has 8 writer threads send new contacts' `/identify`
round robin to the three, kills the leader with SIGKILL after 2 s of writing, and measures the
time from the kill to the first acknowledged (200) write among those sent once the killed
process was gone. Prints each run's time and then min, median and max. Options after `--` go
to every member (for example `--raft-election-ms 1000`).
"""

import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("BINARY", os.path.join(ROOT, "target", "release", "identity-engine"))
WRITERS = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port, path, timeout=1.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def wait_for_leader(ports, deadline_s=30.0):
    """The port of the member every one of `ports` names as leader."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        leaders = set()
        for port in ports:
            try:
                _, status = get_json(port, "/cluster")
                leaders.add(status.get("leader"))
            except (OSError, ValueError, http.client.HTTPException):
                leaders.add(None)
        if len(leaders) == 1 and None not in leaders:
            return leaders.pop()
        time.sleep(0.05)
    raise SystemExit("no leader within %.0f s" % deadline_s)


class Writers:
    """Threads writing new contacts round robin; records when each acknowledged write was sent."""

    def __init__(self, ports):
        self.ports = ports
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acknowledged = []  # (sent, answered) of every 200
        self.counter = itertools.count()
        self.threads = [threading.Thread(target=self.write, args=(i,)) for i in range(WRITERS)]
        for thread in self.threads:
            thread.start()

    def write(self, index):
        conns = {}
        turn = index
        while not self.stop.is_set():
            port = self.ports[turn % len(self.ports)]
            turn += 1
            n = next(self.counter)
            body = json.dumps({"email": "f%d@failover.test" % n, "phoneNumber": str(10**8 + n)})
            sent = time.monotonic()
            try:
                conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
                conns[port] = conn
                conn.request("POST", "/identify", body, {"content-type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                if answer.status == 200:
                    with self.lock:
                        self.acknowledged.append((sent, time.monotonic()))
                else:
                    time.sleep(0.01)
            except (OSError, http.client.HTTPException):
                conns.pop(port, None)
                time.sleep(0.01)

    def first_sent_after(self, moment):
        with self.lock:
            answered = [done for sent, done in self.acknowledged if sent > moment]
        return min(answered) if answered else None

    def join(self):
        self.stop.set()
        for thread in self.threads:
            thread.join()


def one_run(extra):
    data = tempfile.mkdtemp(prefix="identity-engine-failover-")
    ports = [free_port() for _ in range(3)]
    peers = ",".join("%d=127.0.0.1:%d" % (i + 1, p) for i, p in enumerate(ports))
    members = []
    try:
        for i, port in enumerate(ports):
            log = open(os.path.join(data, "member-%d.log" % (i + 1)), "w")
            members.append(subprocess.Popen(
                [BINARY, "--addr", "127.0.0.1:%d" % port, "--data-dir", os.path.join(data, str(i + 1)),
                 "--node-id", str(i + 1), "--peers", peers] + extra,
                stdout=log, stderr=subprocess.STDOUT))
        leader = wait_for_leader(ports)
        writers = Writers(ports)
        time.sleep(2.0)
        killed = time.monotonic()
        members[leader - 1].send_signal(signal.SIGKILL)
        members[leader - 1].wait()
        # Writes sent before the process was gone may still have been answered by it.
        dead = time.monotonic()
        survivors = [p for i, p in enumerate(ports) if i != leader - 1]
        writers.ports = survivors
        deadline = killed + 15.0
        while writers.first_sent_after(dead) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        writers.join()
        first = writers.first_sent_after(dead)
        if first is None:
            raise SystemExit("no write acknowledged within 15 s of the kill (logs in %s)" % data)
        return first - killed
    finally:
        for member in members:
            if member.poll() is None:
                member.kill()
                member.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1:]
    runs = int(args[0]) if args else 10
    if not os.path.exists(BINARY):
        raise SystemExit("%s is missing: run `cargo build --release` first" % BINARY)
    times = []
    for run in range(1, runs + 1):
        seconds = one_run(extra)
        times.append(seconds)
        print("run %2d: %.2f s" % (run, seconds), flush=True)
    print("failover over %d runs: min %.2f s, median %.2f s, max %.2f s (load average %s)" % (
        runs, min(times), statistics.median(times), max(times),
        " ".join("%.2f" % x for x in os.getloadavg())))


if __name__ == "__main__":
    main()
