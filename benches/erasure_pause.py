#!/usr/bin/env python3
"""The purge of an erasure, measured (not a test): its time, and the pause /identify sees during it.

usage: python3 benches/erasure_pause.py HOST:PORT [CONTACT_ID=1] [CLIENTS=4] [PID]

Run the server with `--erasure-purge-within 0`, so that the answer of POST /erasures comes once
the purge is done. Starts CLIENTS keep-alive connections sending /identify (each a new contact,
so each is appended and waits for its fsync), and after two seconds erases CONTACT_ID. Prints
the erasure's time (the purge included), its status, the /identify latencies before and during
it, and, given the server's PID, the bytes the server wrote meanwhile (/proc/PID/io)."""
import http.client, json, sys, threading, time

host, port = sys.argv[1].split(':')
target = int(sys.argv[2]) if len(sys.argv) > 2 else 1
clients = int(sys.argv[3]) if len(sys.argv) > 3 else 4
pid = sys.argv[4] if len(sys.argv) > 4 else None

stop = False
samples = []  # (start, latency) of each /identify
lock = threading.Lock()


def written():
    if not pid:
        return 0
    with open(f'/proc/{pid}/io') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('write_bytes'))


def client(k):
    conn = http.client.HTTPConnection(host, int(port))
    i = 0
    while not stop:
        body = json.dumps({"email": f"pause-{target}-{k}-{i}@example.com"})
        t0 = time.perf_counter()
        conn.request('POST', '/identify', body)
        r = conn.getresponse()
        r.read()
        t1 = time.perf_counter()
        assert r.status == 200, r.status
        with lock:
            samples.append((t0, t1 - t0))
        i += 1


threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
for t in threads:
    t.start()
time.sleep(2)
conn = http.client.HTTPConnection(host, int(port), timeout=600)
w0 = written()
t0 = time.perf_counter()
conn.request('POST', '/erasures', json.dumps({"contactId": target}))
r = conn.getresponse()
answer = r.read()
t1 = time.perf_counter()
w1 = written()
time.sleep(1)
stop = True
for t in threads:
    t.join()
status = json.loads(answer)["erasure"]["status"] if r.status == 200 else answer[:200]
print(f'erasure of contact {target}: {r.status} in {t1 - t0:.3f} s, status {status}')
if pid:
    print(f'bytes written by the server meanwhile: {w1 - w0:,}')
during = sorted(l for s, l in samples if s <= t1 and s + l >= t0)
before = sorted(l for s, l in samples if s + l < t0)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float('nan')


for name, xs in (('before', before), ('during', during)):
    print(f'{name}: {len(xs)} requests, p50 {pct(xs, .5):.2f} ms, p99 {pct(xs, .99):.2f} ms, max {pct(xs, 1):.2f} ms')
