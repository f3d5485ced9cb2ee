#!/usr/bin/env python3
"""The longest pause /identify sees while a file is imported online (not a test).

usage: python3 benches/import_pause.py HOST:PORT [ROWS=100000] [FIRST_ID=1000001] [CLIENTS=4]

Builds a CSV of ROWS new contacts (ids from FIRST_ID, one in five sharing the previous one's
phone, all values new), starts CLIENTS keep-alive connections sending /identify (each a new
contact, so each is appended and waits for its fsync), and after two seconds POSTs the file to
/contacts/import. Prints the import's time and the /identify latencies before and during it."""
import http.client, json, sys, threading, time

host, port = sys.argv[1].split(':')
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
first = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_001
clients = int(sys.argv[4]) if len(sys.argv) > 4 else 4

lines = ["id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt"]
for n in range(rows):
    phone = 10 * first + (n - 1 if n % 5 == 4 else n)
    ts = f"2024-01-01T{(n // 3_600_000) % 24:02}:{(n // 60_000) % 60:02}:{(n // 1000) % 60:02}.{n % 1000:03}Z"
    lines.append(f"{first + n},{phone},import{first}-{n}@example.com,,primary,{ts},{ts},")
data = ("\n".join(lines) + "\n").encode()

stop = False
samples = []  # (start, latency) of each /identify
lock = threading.Lock()

def client(k):
    conn = http.client.HTTPConnection(host, int(port))
    i = 0
    while not stop:
        body = json.dumps({"email": f"pause{first}-{k}-{i}@example.com"})
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
t0 = time.perf_counter()
conn.request('POST', '/contacts/import?format=csv', data, {'Content-Type': 'text/csv'})
r = conn.getresponse()
report = r.read()
t1 = time.perf_counter()
time.sleep(1)
stop = True
for t in threads:
    t.join()
print(f'import of {rows} rows ({len(data)} bytes): {r.status} in {t1 - t0:.3f} s: {report[:200].decode()}')
during = sorted(l for s, l in samples if s <= t1 and s + l >= t0)
before = sorted(l for s, l in samples if s + l < t0)

def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float('nan')

for name, xs in (('before', before), ('during', during)):
    print(f'{name}: {len(xs)} requests, p50 {pct(xs, .5):.2f} ms, p99 {pct(xs, .99):.2f} ms, max {pct(xs, 1):.2f} ms')
