#!/usr/bin/env python3
"""The purge of an erasure, measured (not a test): its time, and the pause /identify sees during it.

usage: python3 benches/erasure_pause.py HOST:PORT [CONTACT_ID=1] [CLIENTS=4] [PID]

Run the server with `--erasure-purge-within 0`, so that the answer of POST /erasures comes once
the purge is done. Starts CLIENTS keep-alive connections sending /identify (each a new contact,
so each is appended and waits for its fsync), and after two seconds erases CONTACT_ID. Prints
the erasure's time (the purge included), its status, the /identify latencies before and during
it, and, given the server's PID, the bytes the server wrote meanwhile (/proc/PID/io)."""
import http.client, json, sys

from pause_load import under_load

host, port = sys.argv[1].split(':')
target = int(sys.argv[2]) if len(sys.argv) > 2 else 1
clients = int(sys.argv[3]) if len(sys.argv) > 3 else 4
pid = sys.argv[4] if len(sys.argv) > 4 else None


def written():
    if not pid:
        return 0
    with open(f'/proc/{pid}/io') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('write_bytes'))


def erase():
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    w0 = written()
    conn.request('POST', '/erasures', json.dumps({"contactId": target}))
    r = conn.getresponse()
    answer = r.read()
    return r.status, answer, written() - w0


(status, answer, bytes_written), t0, t1 = under_load(host, port, clients, target, erase)
state = json.loads(answer)["erasure"]["status"] if status == 200 else answer[:200]
print(f'erasure of contact {target}: {status} in {t1 - t0:.3f} s, status {state}')
if pid:
    print(f'bytes written by the server meanwhile: {bytes_written:,}')
