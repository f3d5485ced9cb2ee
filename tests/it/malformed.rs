//! A bounded fuzz of the edge over raw sockets: a few thousand malformed requests (broken
//! request lines and headers, conflicting Content-Length and Transfer-Encoding, invalid UTF-8,
//! deep JSON, lone surrogates, random damage to good requests). None may get a 5xx other than
//! 503, and the server must answer a clean request afterwards.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::{spawn_app_with, try_parse_response};

/// A small deterministic generator (xorshift64*), so a failure names a case that repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn identify(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Request lines and heads that no parser should take.
const BROKEN_HEADS: &[&[u8]] = &[
    b"\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET  /  HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /contacts?email=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /contacts/%ZZ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /contacts/99999999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /contacts/-1/why/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost x\r\n\r\n",
    b"POST /identify HTTP/1.1\r\n: empty\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /identify HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: -2\r\n\r\n{}",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n{}",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=\xff\r\n{}\r\n0\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    b"POST /identify HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /identify HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
    b"DELETE /blocklist?email=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /contacts/import?format=%ff HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n\xff\xfe\xfd",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
];

/// Bodies for `/identify` and `/blocklist` that are no valid request.
fn broken_bodies() -> Vec<Vec<u8>> {
    let deep_array = format!("{}{}", "[".repeat(7000), "]".repeat(7000));
    let deep_object = format!("{}1{}", r#"{"email":"#.repeat(1500), "}".repeat(1500));
    vec![
        b"\xff\xfe\xfd".to_vec(),
        b"{\"email\":\"\xff@x.io\"}".to_vec(),
        br#"{"email":"\ud800@x.io"}"#.to_vec(),
        br#"{"email":"\udc00"}"#.to_vec(),
        br#"{"phoneNumber":"\ud83d"}"#.to_vec(),
        br#"{"email":"a@b.c","email":"d@e.f"}"#.to_vec(),
        br#"{"email":"a\u0000@b.c"}"#.to_vec(),
        br#"{"phoneNumber":1e400}"#.to_vec(),
        br#"{"phoneNumber":-1}"#.to_vec(),
        br#"{"phoneNumber":18446744073709551616}"#.to_vec(),
        br#"{"email":{"nested":true}}"#.to_vec(),
        br#"[]"#.to_vec(),
        br#"null"#.to_vec(),
        br#"{"email":"x@y.z""#.to_vec(),
        deep_array.into_bytes(),
        deep_object.into_bytes(),
        vec![b'{'; 15_000],
        "{\"email\":\"ä@ö.ü\",\"phoneNumber\":\"١٢٣\"}"
            .as_bytes()
            .to_vec(),
    ]
}

/// Case `n`: a fixed broken head, a broken body, or a good request damaged at random.
fn case(rng: &mut Rng, bodies: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(4) {
        0 => rng.pick(BROKEN_HEADS).to_vec(),
        1 => {
            let body = rng.pick(bodies);
            if rng.below(2) == 0 {
                identify(body)
            } else {
                let mut out = format!(
                    "POST /blocklist HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                out.extend_from_slice(body);
                out
            }
        }
        _ => {
            let mut bytes = identify(br#"{"email":"doc@hillvalley.edu","phoneNumber":"123"}"#);
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = rng.next() as u8,
                    1 => bytes.truncate(at.max(1)),
                    _ => bytes.insert(at, *rng.pick(b"\r\n\0\xff:; \t\"\\")),
                }
            }
            bytes
        }
    }
}

/// Sends `bytes`, shuts the sending side, and returns the status of the answer, if any.
fn send(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server may close before taking every byte (an answer to a head it refused).
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    try_parse_response(&raw).map(|r| r.status)
}

#[test]
fn thousands_of_malformed_requests_get_no_5xx_and_a_clean_one_is_answered_after() {
    let app = spawn_app_with(|c| {
        c.header_timeout_ms = 2000;
        c.request_timeout_ms = 5000;
    });
    let bodies = broken_bodies();
    const CASES: u64 = 3000;
    const THREADS: u64 = 6;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let bodies = &bodies;
                let addr = app.addr;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for n in (t..CASES).step_by(THREADS as usize) {
                        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n + 1));
                        let bytes = case(&mut rng, bodies);
                        if let Some(status) = send(addr, &bytes) {
                            if status >= 500 && status != 503 {
                                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
                                failures.push(format!("case {n}: {status} for {shown:?}"));
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let clean = app.identify(r#"{"email":"clean@x.io","phoneNumber":"42"}"#);
    assert_eq!(clean.status, 200, "{}", clean.text);
    assert_eq!(app.get("/readyz").status, 200);
}
