#!/usr/bin/env python3
"""The longest pause /identify sees while a file is imported online (not a test).

usage: python3 benches/import_pause.py HOST:PORT [ROWS=100000] [FIRST_ID=1000001] [CLIENTS=4]

Builds a CSV of ROWS new contacts (ids from FIRST_ID, one in five sharing the previous one's
phone, all values new), starts CLIENTS keep-alive connections sending /identify (each a new
contact, so each is appended and waits for its fsync), and after two seconds POSTs the file to
/contacts/import. Prints the import's time and the /identify latencies before and during it."""
import http.client, sys

from pause_load import under_load

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


def import_file():
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.request('POST', '/contacts/import?format=csv', data, {'Content-Type': 'text/csv'})
    r = conn.getresponse()
    return r.status, r.read()


(status, report), t0, t1 = under_load(host, port, clients, first, import_file)
print(f'import of {rows} rows ({len(data)} bytes): {status} in {t1 - t0:.3f} s: {report[:200].decode()}')
