//! Seeded populations shared by the benches and `examples/memory.rs`: contact `k` (id `k + 1`)
//! has an email of 25 bytes and a 10-digit phone, each unique to it unless it is a sharer, which
//! reuses the phone of an earlier contact and so joins that contact's cluster as a secondary.
#![allow(dead_code)]

use identity_engine::engine::{Email, Engine, Phone, Query, Timestamp};

/// The creation time of contact 0; contact `k` is created `k` milliseconds later.
pub const START: i64 = 1_700_000_000_000;

/// SplitMix64: a small, fast, seeded generator, so every run builds and asks the same things.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform enough in `0..n` for picking contacts (n is far below 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Who is in the table and how the contacts share phones.
#[derive(Clone, Copy, Debug)]
pub struct Population {
    pub contacts: u64,
    /// One contact in `share_one_in` reuses an earlier contact's phone; 0 means nobody does.
    pub share_one_in: u64,
}

impl Population {
    /// Every identifier distinct: the most memory per contact.
    pub fn distinct(contacts: u64) -> Population {
        Population {
            contacts,
            share_one_in: 0,
        }
    }

    /// A fifth of the contacts are secondaries of an earlier contact's cluster.
    pub fn clustered(contacts: u64) -> Population {
        Population {
            contacts,
            share_one_in: 5,
        }
    }

    /// Contact `k`'s email: 25 bytes, a bijective scramble of `k`, so unique below 2^32.
    pub fn email(&self, k: u64) -> String {
        format!(
            "user.{:08x}@example.com",
            (k as u32).wrapping_mul(0x9E37_79B1)
        )
    }

    /// The phone numbered `key`: 10 digits, unique below 10^10 (7,919,777 is prime to 10).
    pub fn phone(&self, key: u64) -> String {
        format!("{:010}", (key * 7_919_777 + 1_234_567) % 10_000_000_000)
    }

    /// Which phone contact `k` holds: its own, or (for a sharer) that of an earlier contact.
    pub fn phone_key(&self, k: u64) -> u64 {
        let mut k = k;
        while k > 0 && self.share_one_in > 0 && mix(k).is_multiple_of(self.share_one_in) {
            k = mix(k ^ 0x5EED) % k;
        }
        k
    }

    /// The request that created contact `k`: its email and the phone it holds.
    pub fn query(&self, k: u64) -> Query {
        query(&self.email(k), &self.phone(self.phone_key(k)))
    }

    /// Builds the engine the way the service does: plan each request, then apply its changes.
    pub fn build(&self) -> Engine {
        let mut engine = Engine::new();
        for k in 0..self.contacts {
            identify(&mut engine, &self.query(k), Timestamp(START + k as i64));
        }
        engine
    }
}

pub fn query(email: &str, phone: &str) -> Query {
    let email = Email::parse(email).expect("a valid email");
    let phone = Phone::parse(phone).expect("a valid phone");
    Query::new(email, phone).expect("an identifier")
}

/// One `/identify` as `Store::identify` runs it, without the log: plan, apply, answer, render.
pub fn identify(engine: &mut Engine, query: &Query, now: Timestamp) -> Vec<u8> {
    let plan = engine
        .plan_identify(query, now)
        .expect("the guards let it through");
    for change in &plan.changes {
        engine.apply(change).expect("a planned change applies");
    }
    let identity = engine
        .identity(plan.answer)
        .expect("a planned answer names a live contact");
    identity_engine::http::answer_json(&identity, identity_engine::http::AnswerKey::Correct)
}

/// The resident set size of this process in bytes, from `/proc/self/status`.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// The CPU time this thread has run, from `/proc/thread-self/schedstat` (nanoseconds, current to
/// within a scheduler tick): unlike wall time, it does not count time other processes took.
pub fn thread_cpu_time() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("run time in ns");
    std::time::Duration::from_nanos(ns)
}

/// The sizes to bench: `BENCH_SIZES=10000,1_000_000` if set, else `default`.
pub fn sizes(default: &[u64]) -> Vec<u64> {
    match std::env::var("BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .replace('_', "")
                    .parse()
                    .expect("BENCH_SIZES: numbers")
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}
