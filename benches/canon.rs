//! Matching-key benches: what each `--phone-match` and `--email-match` mode adds to a request,
//! `Canon::query` on a seeded mix of 1,024 requests (an email and a phone each, spelled the ways
//! customers type them: dashes, brackets, `+1`, Gmail dots and tags, other domains), asked again
//! and again, so `e164` answers from its per-thread memo (a returning customer); and
//! `e164/first_time`, libphonenumber's parse and check of each number, what a number never seen
//! by the thread costs (`cargo bench --bench canon`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use identity_engine::engine::{Email, Phone, Query};
use identity_engine::matching::canon::{Canon, EmailMatch, Modes, PhoneMatch};

const REQUESTS: usize = 1024;

/// A seeded mix: US numbers in four spellings (a fifth of them not valid numbers, so `e164`
/// falls back), addresses at Gmail (dots, tags), Outlook and elsewhere.
fn requests() -> Vec<Query> {
    let mut seed = 0x5eed_u64;
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    (0..REQUESTS)
        .map(|_| {
            let area = if next(5) == 0 { 555 } else { 201 + next(700) };
            let (exchange, line) = (200 + next(700), next(10_000));
            let phone = match next(4) {
                0 => format!("({area}) {exchange}-{line:04}"),
                1 => format!("{area}-{exchange}-{line:04}"),
                2 => format!("+1 {area} {exchange} {line:04}"),
                _ => format!("{area}{exchange}{line:04}"),
            };
            let user = next(100_000);
            let email = match next(4) {
                0 => format!("John.Doe{user}+shop@gmail.com"),
                1 => format!("johndoe{user}@gmail.com"),
                2 => format!("ann{user}+news@outlook.com"),
                _ => format!("Customer.{user}@Example.com"),
            };
            Query::new(Email::parse(&email).unwrap(), Phone::parse(&phone).unwrap()).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let requests = requests();
    let mut group = c.benchmark_group("canon");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    let modes = [
        ("as-given", PhoneMatch::AsGiven, EmailMatch::AsGiven),
        ("digits", PhoneMatch::Digits, EmailMatch::AsGiven),
        ("e164", PhoneMatch::E164, EmailMatch::AsGiven),
        ("provider", PhoneMatch::AsGiven, EmailMatch::Provider),
        ("e164+provider", PhoneMatch::E164, EmailMatch::Provider),
    ];
    for (name, phone, email) in modes {
        let canon = Canon::new(Modes::new(phone, email, Some("US")).unwrap());
        group.bench_with_input(BenchmarkId::new("query", name), &requests, |b, requests| {
            b.iter_batched(
                || requests.clone(),
                |requests| {
                    for query in requests {
                        black_box(canon.query(query));
                    }
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    let phones: Vec<Phone> = requests.iter().filter_map(|q| q.phone().cloned()).collect();
    let region = Some("US".parse().unwrap());
    group.bench_function("e164/first_time", |b| {
        b.iter(|| {
            for phone in &phones {
                black_box(identity_engine::matching::canon::e164(
                    phone.as_str(),
                    region,
                ));
            }
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
