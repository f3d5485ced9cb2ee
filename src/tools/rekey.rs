//! `identity-engine rekey`: gives a data directory (no server may use it) new matching modes.
//! Every distinct identifier of a live contact gets its key under the new modes; each one whose
//! key differs is moved to it by a [`Change::Rekeyed`] fact (planned under the over-merge
//! guards, logged and applied like any change), merging the clusters that now share a key. The
//! modes file is written last, so a re-key cut short leaves the old record and can simply be
//! run again (a key's key is itself: values already moved are skipped).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::{
    BlockReason, Cause, Email, Engine, EngineError, Kind, Limits, Op, Phone, Refusal, Timestamp,
};
use crate::matching::canon::{Canon, Modes};
use crate::storage::StorageOptions;
use crate::store::{Origin, Store, StoreError};
use crate::tools::import::{ImportError, Progress};

/// What a re-key did.
#[derive(Debug, Default)]
pub struct RekeyReport {
    pub from: Modes,
    pub to: Modes,
    /// Distinct values that got a new key, by kind (emails, phones).
    pub rekeyed: [usize; 2],
    /// Merges of two clusters the new keys made.
    pub merges: usize,
    /// Keys blocked by the re-key: the value's key was blocked because a spelling of it was,
    /// or because it would pass the generic threshold.
    pub blocked: usize,
    /// Values left as they were because moving them would pass the cluster cap (or the key
    /// did not fit), with why.
    pub refused: Vec<(Kind, String, String, Refusal)>,
    pub clusters_before: usize,
    pub clusters_after: usize,
    pub contacts: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for RekeyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "re-keyed from {} to {}", self.from, self.to)?;
        writeln!(
            f,
            "{} email(s) and {} phone number(s) of {} live contact(s) got a new key in {:.2} s",
            self.rekeyed[0],
            self.rekeyed[1],
            self.contacts,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "{} cluster merge(s): {} cluster(s) before, {} after",
            self.merges, self.clusters_before, self.clusters_after
        )?;
        if self.blocked > 0 {
            writeln!(
                f,
                "{} key(s) blocked (a spelling was blocked, or past the generic threshold)",
                self.blocked
            )?;
        }
        if !self.refused.is_empty() {
            writeln!(
                f,
                "{} value(s) kept as they were (their holders still match them only):",
                self.refused.len()
            )?;
            for (kind, from, to, why) in self.refused.iter().take(50) {
                writeln!(f, "  {} {from:?} -> {to:?}: {why}", kind.field())?;
            }
        }
        Ok(())
    }
}

/// Re-keys the data directory of `storage` to `modes`, under `limits`.
pub fn rekey(
    storage: StorageOptions,
    limits: Limits,
    modes: Modes,
) -> Result<RekeyReport, ImportError> {
    let started = Instant::now();
    let dir = storage.dir.clone();
    let from = crate::matching::record::recorded(&dir)?;
    let (store, _) = Store::open_with(storage, limits)?;
    let origin = Origin::tool(Cause::Rekey);
    let now = Timestamp::now();
    let planned = store.peek(|engine| Rekey::plan(engine, &modes));
    let mut report = planned.run(|op| {
        let before = store.stats().clusters;
        match store.execute_offline(op, &origin, now, |engine, _| engine.stats().clusters) {
            Ok(after) => Ok(Ok((before, after))),
            Err(StoreError::Refused(why)) => Ok(Err(why)),
            Err(other) => Err(ImportError::from(other)),
        }
    })?;
    // close() writes and syncs everything logged, and fails if the log did.
    store.close()?;
    crate::matching::record::record(&dir, &modes)?;
    report.from = from;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Re-keys `engine` itself to `modes` at `now` under its limits, through the same ops.
pub fn rekey_engine(
    engine: &mut Engine,
    modes: &Modes,
    now: Timestamp,
) -> Result<RekeyReport, EngineError> {
    Rekey::plan(engine, modes).run(|op| {
        let before = engine.stats().clusters;
        let plan = match engine.plan(op, now) {
            Ok(plan) => plan,
            Err(why) => return Ok(Err(why)),
        };
        for fact in &plan.facts {
            engine.apply(fact)?;
        }
        Ok(Ok((before, engine.stats().clusters)))
    })
}

/// A re-key worked out from the state before it: the keys to block as generic first, then
/// every value to move to its key.
struct Rekey {
    modes: Modes,
    moves: Vec<Move>,
    generic: Vec<(Kind, String)>,
    clusters: usize,
    contacts: usize,
}

impl Rekey {
    fn plan(engine: &Engine, modes: &Modes) -> Rekey {
        let (moves, generic) = moves(engine, &Canon::new(modes.clone()));
        // A value an admin unblocked is never blocked as generic again.
        let generic = (generic.into_iter())
            .filter(|(kind, key)| !engine.is_exempt(*kind, key))
            .collect();
        let stats = engine.stats();
        Rekey {
            modes: modes.clone(),
            moves,
            generic,
            clusters: stats.clusters,
            contacts: stats.contacts - stats.deleted,
        }
    }

    /// Runs every op through `run`, which plans, logs and applies one and says how many
    /// clusters there were before and after it, or why it was refused.
    fn run<E>(
        self,
        mut run: impl FnMut(&Op) -> Result<Result<(usize, usize), Refusal>, E>,
    ) -> Result<RekeyReport, E> {
        let mut report = RekeyReport {
            to: self.modes,
            clusters_before: self.clusters,
            clusters_after: self.clusters,
            contacts: self.contacts,
            ..RekeyReport::default()
        };
        // A key its spellings together give more holders than the threshold is blocked before
        // any of them moves, so that no cluster merges by it on the way.
        for (kind, key) in self.generic {
            let op = Op::Block {
                kind,
                value: key,
                reason: BlockReason::Generic,
            };
            if let Ok((_, after)) = run(&op)? {
                report.clusters_after = after;
                report.blocked += 1;
            }
        }
        let progress = Progress::new(self.moves.len() as u64, "values");
        for (i, (kind, value, key)) in self.moves.into_iter().enumerate() {
            let op = Op::Rekey {
                kind,
                from: value,
                to: key,
            };
            match run(&op)? {
                Err(why) => {
                    let Op::Rekey { kind, from, to } = op else {
                        unreachable!("the op is a re-key")
                    };
                    report.refused.push((kind, from, to, why));
                }
                Ok((before, after)) => {
                    report.merges += before.saturating_sub(after);
                    report.clusters_after = after;
                    report.rekeyed[kind as usize] += 1;
                }
            }
            progress.tick(i as u64 + 1);
        }
        progress.finish();
        Ok(report)
    }
}

/// A value of a kind, and its key.
type Move = (Kind, String, String);

/// Every distinct identifier of a live contact whose key differs from it, with its key
/// (emails, then phones, each in text order, so a re-key is the same whatever the row order);
/// and the keys that would gain more live holders than the generic threshold allows.
fn moves(engine: &Engine, canon: &Canon) -> (Vec<Move>, Vec<(Kind, String)>) {
    let mut held: [BTreeMap<String, u32>; 2] = Default::default();
    for row in engine.contacts().filter(|c| c.deleted_at.is_none()) {
        for (kind, value) in [(Kind::Email, row.email), (Kind::Phone, row.phone_number)] {
            if let Some(value) = value {
                *held[kind as usize].entry(value).or_default() += 1;
            }
        }
    }
    let key = |kind: Kind, v: &str| match kind {
        Kind::Email => Email::parse(v)
            .ok()
            .flatten()
            .map(|e| canon.email(e).to_string()),
        Kind::Phone => Phone::parse(v)
            .ok()
            .flatten()
            .map(|p| canon.phone(p).to_string()),
    };
    let (mut moves, mut per_key) = (Vec::new(), BTreeMap::<(Kind, String), u32>::new());
    for kind in Kind::BOTH {
        for (value, holders) in std::mem::take(&mut held[kind as usize]) {
            let Some(key) = key(kind, &value) else {
                continue;
            };
            *per_key.entry((kind, key.clone())).or_default() += holders;
            if key != value {
                moves.push((kind, value, key));
            }
        }
    }
    let threshold = engine.limits().generic_threshold;
    let generic = per_key
        .into_iter()
        .filter(|&(_, n)| threshold != 0 && n > threshold)
        .map(|(key, _)| key)
        .collect();
    (moves, generic)
}
