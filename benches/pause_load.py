"""Shared by the pause benches (not a test): /identify load around one long operation.

`under_load(host, port, clients, tag, operation)` starts CLIENTS keep-alive connections sending
/identify (each a new contact, so each is appended and waits for its fsync), runs `operation`
after two seconds, stops the load a second after it returns, prints the /identify latencies
before and during it, and returns what `operation` returned with its start and end times."""
import http.client, json, threading, time


def under_load(host, port, clients, tag, operation):
    stop = False
    samples = []  # (start, latency) of each /identify
    lock = threading.Lock()

    def client(k):
        conn = http.client.HTTPConnection(host, int(port))
        i = 0
        while not stop:
            body = json.dumps({"email": f"pause-{tag}-{k}-{i}@example.com"})
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
    t0 = time.perf_counter()
    result = operation()
    t1 = time.perf_counter()
    time.sleep(1)
    stop = True
    for t in threads:
        t.join()
    during = sorted(l for s, l in samples if s <= t1 and s + l >= t0)
    before = sorted(l for s, l in samples if s + l < t0)
    for name, xs in (('before', before), ('during', during)):
        print(f'{name}: {len(xs)} requests, p50 {pct(xs, .5):.2f} ms, '
              f'p99 {pct(xs, .99):.2f} ms, max {pct(xs, 1):.2f} ms')
    return result, t0, t1


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float('nan')
