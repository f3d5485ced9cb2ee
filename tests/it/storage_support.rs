//! Helpers for the durability and crash tests: copying a live data directory as a crash would
//! leave it, logs to damage and a way to read their records with offsets, and an HTTP client that
//! reports a dead server as an error instead of panicking.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use identity_engine::engine::{
    Contact, ContactId, Email, Engine, Identity, Limits, Op, Outcome, Phone, Query,
};
use identity_engine::storage::frame::{read_frame, Frame, FILE_HEADER};
use identity_engine::storage::wal::{parse_segment_name, Record};
use identity_engine::storage::{codec, snapshot, Storage, StorageOptions};
use identity_engine::store::{Origin, Store, StoreError};

/// Copies the files of `from` into `to` as they are at one moment, as a crash (not a power loss)
/// would leave them. A file that vanishes while copying (the snapshotter removed or renamed it)
/// makes the copy start over, so the copy never mixes two moments of the directory.
pub fn copy_live_dir(from: &Path, to: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).expect("create the copy's directory");
        match try_copy(from, to) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {}
            Err(e) => panic!("copying {} failed: {e}", from.display()),
        }
    }
}

fn try_copy(from: &Path, to: &Path) -> io::Result<()> {
    let names: Vec<_> = std::fs::read_dir(from)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    for name in names {
        if from.join(&name).is_dir() {
            std::fs::create_dir_all(to.join(&name))?;
            try_copy(&from.join(&name), &to.join(&name))?;
        } else {
            std::fs::copy(from.join(&name), to.join(&name))?;
        }
    }
    Ok(())
}

/// The log segments of `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, |name| parse_segment_name(name).is_some())
}

/// The snapshots of `dir`, oldest first.
pub fn snapshots(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, |name| snapshot::parse_snapshot_name(name).is_some())
}

fn files_named(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the data directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| keep(&path.file_name().unwrap().to_string_lossy()))
        .collect();
    found.sort();
    found
}

/// One record of a segment and where its frame lies.
#[derive(Debug, Clone)]
pub struct Located {
    pub start: usize,
    pub end: usize,
    pub record: Record,
}

/// Where the records of an undamaged segment end: the zeros the writer fills ahead of its
/// records start there.
pub fn records_end(buf: &[u8]) -> usize {
    records(buf).last().map_or(FILE_HEADER, |l| l.end)
}

/// Every record of an undamaged segment's bytes, in order (zeros after them are not records).
pub fn records(buf: &[u8]) -> Vec<Located> {
    let mut offset = FILE_HEADER;
    let mut found = Vec::new();
    while offset < buf.len() && buf[offset..].iter().any(|&b| b != 0) {
        let Frame::Valid { payload, next } = read_frame(buf, offset) else {
            panic!("the segment is damaged at offset {offset}");
        };
        let record = codec::decode::<Record>(payload).expect("a record decodes");
        found.push(Located {
            start: offset,
            end: next,
            record,
        });
        offset = next;
    }
    found
}

/// A port that was free a moment ago, for a server that must be told its address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// A complete HTTP answer: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Sends one request on a new connection; any failure, a dead server or a truncated answer
/// included, is an error rather than a panic.
pub fn try_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad answer"))
}

/// Parses an answer that carries a `Content-Length` and all the bytes it announces.
fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))?
        .1
        .trim()
        .parse()
        .ok()?;
    (body.len() == length).then(|| Reply {
        status,
        body: body.to_owned(),
    })
}

/// What a recovered engine shows: every row, and the answer for every id (None for deleted or
/// unknown ones, one past the highest included).
pub type Shown = (Vec<Contact>, Vec<Option<Identity>>);

pub fn shown(engine: &Engine) -> Shown {
    let answers = (1..=engine.max_id() + 1)
        .map(|id| engine.identity(id).map(|i| i.to_owned()))
        .collect();
    (engine.contacts().collect(), answers)
}

/// The engine that the records of every whole group in `records` rebuild.
pub fn replayed(records: &[Located]) -> Engine {
    let mut engine = Engine::new();
    let mut group = Vec::new();
    for located in records {
        group.push(&located.record.change);
        if located.record.commit {
            for change in group.drain(..) {
                engine.apply(change).expect("a logged change applies");
            }
        }
    }
    engine
}

/// A runtime to drive a store's async methods from a test thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A query of identifiers known to be valid.
/// `/identify` through the store's one path, as the HTTP handler runs it: the identity.
pub async fn identify(store: &Store, query: &Query) -> Result<Identity, StoreError> {
    let op = Op::Identify(query.clone());
    let origin = Origin::of(&op);
    let answer = store.execute(op, origin, |engine, done| match done.outcome {
        Outcome::Identity(id) => engine.identity(id).map(|i| i.to_owned()),
        _ => None,
    });
    Ok(answer
        .await?
        .expect("an identify answers with a live contact"))
}

/// A deletion through the store's one path: the primary of each group its cluster became.
pub async fn delete(store: &Store, id: ContactId) -> Result<Vec<ContactId>, StoreError> {
    let op = Op::Delete(id);
    let origin = Origin::of(&op);
    store
        .execute(op, origin, |engine, done| match &done.outcome {
            Outcome::Deleted { groups, .. } => (groups.iter())
                .filter_map(|&p| engine.identity(p))
                .map(|i| i.primary_contact_id)
                .collect(),
            _ => Vec::new(),
        })
        .await
}

pub fn query_of(email: Option<&str>, phone: Option<&str>) -> Query {
    let email = email.map(|e| Email::parse(e).unwrap().unwrap());
    let phone = phone.map(|p| Phone::parse(p).unwrap().unwrap());
    Query::new(email, phone).unwrap()
}

/// A live store's log, with single-record groups, merges of two and three records and a
/// deletion that splits a cluster, copied as a crash would leave it (no shutdown snapshot),
/// then with the zeros the writer fills ahead of its records trimmed, so that a test can put
/// its own tail there. Returns the directory of the copy, its one segment, and what the live
/// store showed.
pub fn crash_image_of_a_log_with_merges() -> (tempfile::TempDir, PathBuf, Shown) {
    let (image, segment, live_state) = crash_image_with_its_zeros();
    let bytes = std::fs::read(&segment).expect("read the segment");
    std::fs::write(&segment, &bytes[..records_end(&bytes)]).expect("trim the segment");
    (image, segment, live_state)
}

/// [`crash_image_of_a_log_with_merges`] as the crash left it: the segment still has the zeros
/// the writer filled ahead of its records.
pub fn crash_image_with_its_zeros() -> (tempfile::TempDir, PathBuf, Shown) {
    let live = tempfile::tempdir().expect("temp dir");
    // A generic threshold of 2, so that the last request blocks a value as it adds a row.
    let limits = Limits {
        generic_threshold: 2,
        max_cluster_size: 0,
    };
    let (store, _) = Store::open_with(StorageOptions::new(live.path()), limits).expect("open");
    let runtime = runtime();
    let requests = [
        (Some("doc@hillvalley.edu"), Some("1")),
        (Some("marty@hillvalley.edu"), Some("2")),
        (Some("george@hillvalley.edu"), Some("3")),
        (Some("marty@hillvalley.edu"), Some("3")), // merges 3 into 2: one record
        (Some("doc@hillvalley.edu"), Some("2")),   // merges {2, 3} into 1: one record
        (Some("biff@hillvalley.edu"), Some("4")),
    ];
    for (email, phone) in requests {
        runtime
            .block_on(identify(&store, &query_of(email, phone)))
            .expect("identify");
    }
    // Deleting 2 undoes both joins: its deletion and 3 becoming a primary again.
    runtime.block_on(delete(&store, 2)).expect("delete");
    let last = [
        (Some("biff@hillvalley.edu"), Some("5")),
        (Some("emmett@hillvalley.edu"), Some("5")),
        // "5" has two holders: blocked as generic, then a new primary: a group of two records.
        (Some("jennifer@hillvalley.edu"), Some("5")),
    ];
    for (email, phone) in last {
        runtime
            .block_on(identify(&store, &query_of(email, phone)))
            .expect("identify");
    }
    let live_state = runtime
        .block_on(store.read(shown))
        .expect("read the live state");
    let image = tempfile::tempdir().expect("temp dir");
    copy_live_dir(live.path(), image.path());
    drop(store);
    let segment = match segments(image.path()).as_slice() {
        [one] => one.clone(),
        more => panic!("expected one segment, found {more:?}"),
    };
    (image, segment, live_state)
}

/// Where the groups of a segment end (the header's end counts: zero groups end there).
pub fn group_ends(records: &[Located]) -> Vec<usize> {
    let ends = records.iter().filter(|l| l.record.commit).map(|l| l.end);
    std::iter::once(FILE_HEADER).chain(ends).collect()
}

/// Starts storage on a fresh directory holding only `segment_bytes` under `name`.
pub fn open_segment(name: &Path, segment_bytes: &[u8]) -> (tempfile::TempDir, Engine, u64, bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name.file_name().unwrap());
    std::fs::write(&path, segment_bytes).expect("write the segment");
    let (storage, engine, report) = Storage::open(StorageOptions::new(dir.path()))
        .unwrap_or_else(|e| panic!("start-up refused {} bytes: {e}", segment_bytes.len()));
    drop(storage);
    (dir, engine, report.last_seq, report.tail_cut.is_some())
}

/// A log of twelve requests, left without a shutdown snapshot. It begins with two contacts and
/// then a merge of them (one record).
pub fn a_longer_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = Store::open(StorageOptions::new(dir.path())).expect("open");
    let runtime = runtime();
    let mut requests = vec![
        ("doc@hillvalley.edu".to_owned(), "1".to_owned()),
        ("marty@hillvalley.edu".to_owned(), "2".to_owned()),
        ("doc@hillvalley.edu".to_owned(), "2".to_owned()),
    ];
    requests.extend((3..12).map(|i| (format!("user{i}@example.com"), format!("{i}"))));
    for (email, phone) in &requests {
        let q = query_of(Some(email), Some(phone));
        runtime.block_on(identify(&store, &q)).expect("identify");
    }
    drop(store);
    let segment = segments(dir.path()).pop().expect("a segment");
    (dir, segment)
}

/// A deterministic stream of bytes that look like nothing in particular.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

/// The numbers that follow "offset " in `message`.
pub fn offsets_in(message: &str) -> Vec<usize> {
    let after = message.split("offset ").skip(1);
    let digits = after.map(|s| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
    });
    digits.filter_map(|d| d.parse().ok()).collect()
}
