//! A brute-force reference model of docs/API.md's rules: a plain list of rows and of remembered joins,
//! no indexes and no union-find; every question is answered by scanning every row.
//!
//! It is written from docs/API.md, not from the engine, so that a test can check one against the
//! other. It keeps to the engine's choices where docs/API.md leaves room: time never goes backwards,
//! a join is remembered only when it is new evidence, and a join is forgotten once no live row
//! holds its email or its phone.
//!
//! The over-merge guards are modelled the same way: a list of blocked values, and clusters
//! recomputed after every step from all the evidence minus the blocked values. A request is
//! tried on a copy and kept only if no guard refuses it, so a refused request changes nothing.

use identity_engine::engine::{BlockReason, Contact, Kind, Timestamp};

pub type Id = u32;

/// One contact row, the engine's own declaration of it (the log's record of a new row); time
/// in milliseconds. A primary has `linked_id` None.
pub use identity_engine::engine::NewContact as Row;

/// The row as the engine reads it, for comparing the two (a row the model has not erased).
pub fn to_contact(row: &Row) -> Contact {
    Contact::from(row.clone())
}

/// Whether a row takes part in matching: neither deleted nor erased (an erased row holds no
/// identifier, and is listed in `Model::erased`).
fn is_live(row: &Row) -> bool {
    row.deleted_at.is_none() && (row.email.is_some() || row.phone.is_some())
}

/// Who is older: the smaller `(createdAt, id)`.
fn age(row: &Row) -> (Timestamp, Id) {
    (row.created_at, row.id)
}

/// The `/identify` answer, in docs/API.md's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelAnswer {
    pub primary_contact_id: Id,
    pub emails: Vec<String>,
    pub phone_numbers: Vec<String>,
    pub secondary_contact_ids: Vec<Id>,
}

/// Why a guard refused a request; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// 409 `cluster_limit`.
    ClusterLimit,
    /// 422 `blocked_identifier`.
    Blocked,
}

/// Why a deletion was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteError {
    Unknown,
    AlreadyDeleted,
}

/// One field of an edit: left as it is, removed, or given a value (already normalized).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    Keep,
    Remove,
    Set(&'a str),
}

impl<'a> Field<'a> {
    fn after(self, held: Option<&'a str>) -> Option<&'a str> {
        match self {
            Field::Keep => held,
            Field::Remove => None,
            Field::Set(value) => Some(value),
        }
    }
}

/// Why an edit was refused; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditError {
    /// 404: no contact has the id, or it is deleted.
    Missing(DeleteError),
    /// 400 `missing_identifier`: the contact would keep neither an email nor a phone.
    NoIdentifier,
    /// 409 or 422.
    Guard(Refused),
}

/// What an erasure names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Erase {
    Contact(Id),
    Value(Kind, String),
}

/// Why an erasure was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EraseError {
    /// 404: no such contact, or no row holds the value.
    NotFound,
    /// 422: the value is blocked.
    Blocked,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    rows: Vec<Row>,
    /// Remembered joins: a request named this email and this phone together and added no row.
    joins: Vec<(String, String)>,
    /// Blocked values: evidence of nothing while they are here.
    blocked: Vec<(Kind, String, BlockReason)>,
    /// Values an admin unblocked: never blocked as generic again.
    exempt: Vec<(Kind, String)>,
    /// A value held by more live rows than this is blocked as generic; 0: never.
    pub generic_threshold: usize,
    /// No request may leave a cluster of more live rows than this; 0: no cap.
    pub max_cluster_size: usize,
    /// When each erased row was erased, by id.
    erased: std::collections::BTreeMap<Id, Timestamp>,
    /// The ledger: each erasure's contacts, and whether its purge is done.
    ledger: Vec<(Vec<Id>, bool)>,
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    /// Every row ever created, in id order.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Every row as the engine shows it, `erasedAt` included.
    pub fn contacts(&self) -> Vec<Contact> {
        (self.rows.iter())
            .map(|row| {
                let mut contact = to_contact(row);
                contact.erased_at = self.erased.get(&row.id).copied();
                contact
            })
            .collect()
    }

    /// How many rows are not live (deleted or erased).
    pub fn gone(&self) -> usize {
        self.rows.iter().filter(|r| !is_live(r)).count()
    }

    /// The ledger: each erasure's contacts and whether it is done.
    pub fn ledger(&self) -> &[(Vec<Id>, bool)] {
        &self.ledger
    }

    /// `POST /erasures`: the erasure's id and the primaries of the groups the clusters of its
    /// live contacts became, oldest first. Erasing an erased contact answers the erasure that
    /// erased it and changes nothing; a value no row holds (an erased one included) is not found.
    pub fn erase(&mut self, target: &Erase, now: i64) -> Result<(u64, Vec<Id>), EraseError> {
        let gone: Vec<usize> = match target {
            Erase::Contact(id) => {
                let at =
                    (self.rows.iter().position(|r| r.id == *id)).ok_or(EraseError::NotFound)?;
                if self.erased.contains_key(id) {
                    let n = self
                        .ledger
                        .iter()
                        .position(|(ids, _)| ids.contains(id))
                        .unwrap();
                    return Ok((n as u64 + 1, Vec::new()));
                }
                vec![at]
            }
            Erase::Value(kind, value) => {
                if self.is_blocked(*kind, value) {
                    return Err(EraseError::Blocked);
                }
                (0..self.rows.len())
                    .filter(|&i| field(&self.rows[i], *kind) == Some(value.as_str()))
                    .collect()
            }
        };
        if gone.is_empty() {
            return Err(EraseError::NotFound);
        }
        let now = self.effective(now);
        let former: Vec<usize> = (gone.iter())
            .filter(|&&i| is_live(&self.rows[i]))
            .flat_map(|&i| self.cluster(i))
            .filter(|i| !gone.contains(i))
            .collect();
        let mut values = Vec::new();
        for &i in &gone {
            let row = &mut self.rows[i];
            values.extend(row.email.take().map(|v| (Kind::Email, v)));
            values.extend(row.phone.take().map(|v| (Kind::Phone, v)));
            self.erased.insert(row.id, Timestamp(now));
        }
        // A value no row holds any more is forgotten whole: an admin's unblock of it too.
        for (kind, value) in values {
            let held = self
                .rows
                .iter()
                .any(|r| field(r, kind) == Some(value.as_str()));
            if !held && !self.is_blocked(kind, &value) {
                self.exempt.retain(|(k, v)| !(*k == kind && *v == value));
            }
        }
        self.forget_unheld_joins();
        self.relink(now);
        let mut ids: Vec<Id> = gone.iter().map(|&i| self.rows[i].id).collect();
        ids.sort_unstable();
        self.ledger.push((ids, false));
        Ok((self.ledger.len() as u64, self.primaries_of(former)))
    }

    /// A purge: every pending erasure is done; their ids.
    pub fn purge(&mut self) -> Vec<u64> {
        let mut done = Vec::new();
        for (n, (_, purged)) in self.ledger.iter_mut().enumerate() {
            if !*purged {
                *purged = true;
                done.push(n as u64 + 1);
            }
        }
        done
    }

    /// The primary of the cluster of each row of `rows` (live ones), oldest first, once each.
    fn primaries_of(&self, rows: Vec<usize>) -> Vec<Id> {
        let mut primaries: Vec<usize> = rows.into_iter().map(|i| self.cluster(i)[0]).collect();
        primaries.sort_by_key(|&i| age(&self.rows[i]));
        primaries.dedup();
        primaries.into_iter().map(|i| self.rows[i].id).collect()
    }

    /// A join whose email or phone no live row holds any more is forgotten.
    fn forget_unheld_joins(&mut self) {
        let joins = std::mem::take(&mut self.joins);
        self.joins = joins
            .into_iter()
            .filter(|(e, p)| self.is_held(|r| &r.email, e) && self.is_held(|r| &r.phone, p))
            .collect();
    }

    /// The remembered joins, in the order they were made.
    pub fn joins(&self) -> &[(String, String)] {
        &self.joins
    }

    /// The number of live rows in the largest cluster (0 when none is live).
    pub fn largest_cluster(&self) -> usize {
        self.live()
            .map(|i| self.cluster(i).len())
            .max()
            .unwrap_or(0)
    }

    /// The number of clusters of live rows.
    pub fn cluster_count(&self) -> usize {
        self.live().filter(|&i| self.cluster(i)[0] == i).count()
    }

    /// A model whose guards are `generic_threshold` and `max_cluster_size` (0 turns one off).
    pub fn with_guards(generic_threshold: usize, max_cluster_size: usize) -> Model {
        Model {
            generic_threshold,
            max_cluster_size,
            ..Model::default()
        }
    }

    /// The blocked values, as (kind, value, reason), sorted.
    pub fn blocked(&self) -> Vec<(Kind, String, BlockReason)> {
        let mut list = self.blocked.clone();
        list.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        list
    }

    /// `POST /identify` under the over-merge guards: blocked values dropped, the generic rule,
    /// the cap. A refused request changes nothing.
    pub fn identify_guarded(
        &mut self,
        email: Option<&str>,
        phone: Option<&str>,
        now: i64,
    ) -> Result<ModelAnswer, Refused> {
        let mut email = email.filter(|e| !self.is_blocked(Kind::Email, e));
        let mut phone = phone.filter(|p| !self.is_blocked(Kind::Phone, p));
        if email.is_none() && phone.is_none() {
            return Err(Refused::Blocked);
        }
        let mut next = self.clone();
        let mut answer = next.identify(email, phone, now);
        // Would the new row (if any) give a value one holder too many? Then that value is
        // blocked first and the request goes on as if it had been blocked.
        let added = next.rows.len() > self.rows.len();
        let generic = [(Kind::Email, email), (Kind::Phone, phone)]
            .into_iter()
            .find(|&(kind, value)| {
                added
                    && value.is_some_and(|v| {
                        self.generic_threshold > 0
                            && !self.exempt.contains(&(kind, v.to_owned()))
                            && self.live_holders(kind, v) >= self.generic_threshold
                    })
            });
        if let Some((kind, Some(value))) = generic {
            next = self.clone();
            next.block(kind, value, BlockReason::Generic, now);
            match kind {
                Kind::Email => email = None,
                Kind::Phone => phone = None,
            }
            if email.is_none() && phone.is_none() {
                return Err(Refused::Blocked);
            }
            answer = next.identify(email, phone, now);
        }
        if self.over_cap(answer.secondary_contact_ids.len() + 1) {
            return Err(Refused::ClusterLimit);
        }
        *self = next;
        Ok(answer)
    }

    /// Blocks `value` (an admin's block unless `reason` says generic); the primaries of the
    /// clusters its holders are in afterwards, oldest first. Blocking it again changes nothing.
    pub fn block(&mut self, kind: Kind, value: &str, reason: BlockReason, now: i64) -> Vec<Id> {
        if !self.is_blocked(kind, value) {
            let now = self.effective(now);
            self.blocked.push((kind, value.to_owned(), reason));
            self.relink(now);
        }
        self.primaries_holding(kind, value)
    }

    /// Unblocks `value`: None if it was not blocked; else the primaries of its holders'
    /// clusters (one at most), unless that cluster would pass the cap.
    pub fn unblock(
        &mut self,
        kind: Kind,
        value: &str,
        now: i64,
    ) -> Result<Option<Vec<Id>>, Refused> {
        if !self.is_blocked(kind, value) {
            return Ok(None);
        }
        let mut next = self.clone();
        let now = next.effective(now);
        next.blocked.retain(|(k, v, _)| !(*k == kind && v == value));
        next.exempt.push((kind, value.to_owned()));
        next.relink(now);
        let holders = next
            .live()
            .filter(|&i| field(&next.rows[i], kind) == Some(value));
        if holders
            .map(|i| next.cluster(i).len())
            .any(|n| next.over_cap(n))
        {
            return Err(Refused::ClusterLimit);
        }
        *self = next;
        Ok(Some(self.primaries_holding(kind, value)))
    }

    fn over_cap(&self, size: usize) -> bool {
        self.max_cluster_size > 0 && size > self.max_cluster_size
    }

    fn is_blocked(&self, kind: Kind, value: &str) -> bool {
        self.blocked
            .iter()
            .any(|(k, v, _)| *k == kind && v == value)
    }

    /// How many live rows hold `value`.
    pub fn live_holders(&self, kind: Kind, value: &str) -> usize {
        self.live()
            .filter(|&i| field(&self.rows[i], kind) == Some(value))
            .count()
    }

    fn primaries_holding(&self, kind: Kind, value: &str) -> Vec<Id> {
        let mut primaries: Vec<usize> = self
            .live()
            .filter(|&i| field(&self.rows[i], kind) == Some(value))
            .map(|i| self.cluster(i)[0])
            .collect();
        primaries.sort_by_key(|&i| age(&self.rows[i]));
        primaries.dedup();
        primaries.into_iter().map(|i| self.rows[i].id).collect()
    }

    /// `POST /identify` with already normalized identifiers, at least one present (rules 2-5).
    pub fn identify(&mut self, email: Option<&str>, phone: Option<&str>, now: i64) -> ModelAnswer {
        assert!(
            email.is_some() || phone.is_some(),
            "rule 1 is the caller's business"
        );
        let now = self.effective(now);
        let matched: Vec<usize> = self
            .live()
            .filter(|&i| same(&self.rows[i].email, email) || same(&self.rows[i].phone, phone))
            .collect();
        // Rule 2: nothing known, a new primary.
        let Some(&first) = matched.first() else {
            let row = self.push(email, phone, None, now);
            return self.answer(row);
        };
        // Rule 3: the request spans clusters, so it is a join; remembering it merges them.
        let first_cluster = self.cluster(first);
        let spans_clusters = matched.iter().any(|i| !first_cluster.contains(i));
        if spans_clusters {
            // Each identifier's holders share one cluster, so only an email and a phone can span.
            self.remember(email.unwrap(), phone.unwrap());
            self.relink(now);
        }
        // Rule 4: something new, a new secondary; else perhaps a join within the cluster.
        let cluster = self.cluster(first);
        let knows = |held: fn(&Row) -> &Option<String>, asked: Option<&str>| {
            asked.is_none() || cluster.iter().any(|&i| same(held(&self.rows[i]), asked))
        };
        if !(knows(|r| &r.email, email) && knows(|r| &r.phone, phone)) {
            self.push(email, phone, Some(self.rows[cluster[0]].id), now);
        } else if !spans_clusters {
            self.remember_if_new_evidence(email, phone);
        }
        self.answer(cluster[0])
    }

    /// A request naming an email and a phone of one cluster is evidence of its own unless one
    /// live row already holds both.
    fn remember_if_new_evidence(&mut self, email: Option<&str>, phone: Option<&str>) {
        let (Some(e), Some(p)) = (email, phone) else {
            return;
        };
        let one_row_holds_both = self
            .live()
            .any(|i| same(&self.rows[i].email, email) && same(&self.rows[i].phone, phone));
        if !one_row_holds_both {
            self.remember(e, p);
        }
    }

    /// `rekey`: every live row's identifiers and every remembered join turned into keys by
    /// `email` and `phone`, then every live row relinked to its cluster's oldest at `now`.
    /// Deleted rows keep what they held.
    pub fn rekey(
        &mut self,
        email: impl Fn(&str) -> String,
        phone: impl Fn(&str) -> String,
        now: i64,
    ) {
        let now = self.effective(now);
        for i in self.live().collect::<Vec<_>>() {
            let row = &mut self.rows[i];
            row.email = row.email.as_deref().map(&email);
            row.phone = row.phone.as_deref().map(&phone);
        }
        for (e, p) in std::mem::take(&mut self.joins) {
            self.remember(&email(&e), &phone(&p));
        }
        self.relink(now);
    }

    /// `DELETE /contacts/{id}`: the primaries of the groups its former cluster becomes, oldest first.
    pub fn delete(&mut self, id: Id, now: i64) -> Result<Vec<Id>, DeleteError> {
        let now = self.effective(now);
        let gone = self
            .rows
            .iter()
            .position(|r| r.id == id)
            .ok_or(DeleteError::Unknown)?;
        if !is_live(&self.rows[gone]) {
            return Err(DeleteError::AlreadyDeleted);
        }
        let former = self.cluster(gone);
        self.rows[gone].deleted_at = Some(Timestamp(now));
        self.forget_unheld_joins();
        self.relink(now);
        let rest = former.into_iter().filter(|&i| i != gone).collect();
        Ok(self.primaries_of(rest))
    }

    /// `PATCH /contacts/{id}`: the row holds its new values as if it always had, every cluster
    /// recomputed from the evidence (joins naming a value no live row holds forgotten). A new
    /// value that is blocked, or that this one more holder would make generic, is refused, and
    /// so is a result over the cap. The identity of every cluster it touched: the edited
    /// contact's, then each group its former cluster split into, oldest primary first.
    pub fn edit(
        &mut self,
        id: Id,
        email: Field<'_>,
        phone: Field<'_>,
        now: i64,
    ) -> Result<Vec<ModelAnswer>, EditError> {
        let at = self.effective(now);
        let i = self.rows.iter().position(|r| r.id == id);
        let i = i.ok_or(EditError::Missing(DeleteError::Unknown))?;
        if !is_live(&self.rows[i]) {
            return Err(EditError::Missing(DeleteError::AlreadyDeleted));
        }
        let row = self.rows[i].clone();
        let held = [row.email.as_deref(), row.phone.as_deref()];
        let wanted = [email.after(held[0]), phone.after(held[1])];
        if wanted == [None, None] {
            return Err(EditError::NoIdentifier);
        }
        if wanted == held {
            return Ok(vec![self.answer(i)]);
        }
        for (kind, (new, old)) in [Kind::Email, Kind::Phone]
            .into_iter()
            .zip(wanted.into_iter().zip(held))
        {
            let Some(value) = new.filter(|&v| Some(v) != old) else {
                continue;
            };
            let generic = self.generic_threshold > 0
                && !self.exempt.contains(&(kind, value.to_owned()))
                && self.live_holders(kind, value) >= self.generic_threshold;
            if self.is_blocked(kind, value) || generic {
                return Err(EditError::Guard(Refused::Blocked));
            }
        }
        let former = self.cluster(i);
        let mut next = self.clone();
        next.rows[i].email = wanted[0].map(str::to_owned);
        next.rows[i].phone = wanted[1].map(str::to_owned);
        next.rows[i].updated_at = Timestamp(at);
        next.forget_unheld_joins();
        next.relink(at);
        if next.over_cap(next.cluster(i).len()) {
            return Err(EditError::Guard(Refused::ClusterLimit));
        }
        *self = next;
        let edited = self.cluster(i);
        let mut others: Vec<usize> = former
            .into_iter()
            .filter(|j| !edited.contains(j))
            .map(|j| self.cluster(j)[0])
            .collect();
        others.sort_by_key(|&j| age(&self.rows[j]));
        others.dedup();
        let answers = std::iter::once(i).chain(others);
        Ok(answers.map(|j| self.answer(j)).collect())
    }

    /// The answer for the cluster of the row at `index`.
    fn answer(&self, index: usize) -> ModelAnswer {
        let members: Vec<&Row> = self
            .cluster(index)
            .into_iter()
            .map(|i| &self.rows[i])
            .collect();
        let mut emails: Vec<String> = Vec::new();
        let mut phones: Vec<String> = Vec::new();
        for row in &members {
            push_distinct(&mut emails, &row.email);
            push_distinct(&mut phones, &row.phone);
        }
        ModelAnswer {
            primary_contact_id: members[0].id,
            emails,
            phone_numbers: phones,
            secondary_contact_ids: members[1..].iter().map(|r| r.id).collect(),
        }
    }

    /// The live rows (as indexes) connected to row `start` by evidence, oldest first.
    fn cluster(&self, start: usize) -> Vec<usize> {
        let mut found = vec![start];
        let mut next = 0;
        while next < found.len() {
            let here = found[next];
            for other in self.live() {
                if !found.contains(&other) && self.connected(here, other) {
                    found.push(other);
                }
            }
            next += 1;
        }
        found.sort_by_key(|&i| age(&self.rows[i]));
        found
    }

    /// Direct evidence between two live rows: a shared identifier, or a remembered join,
    /// naming no blocked value.
    fn connected(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.rows[a], &self.rows[b]);
        let evidence =
            |kind, x: &Option<String>| x.as_deref().is_some_and(|v| !self.is_blocked(kind, v));
        let shared = |kind, x: &Option<String>, y: &Option<String>| evidence(kind, x) && x == y;
        let joined = |x: &Row, y: &Row| {
            evidence(Kind::Email, &x.email)
                && evidence(Kind::Phone, &y.phone)
                && self.joins.iter().any(|(e, p)| {
                    x.email.as_deref() == Some(e.as_str()) && y.phone.as_deref() == Some(p.as_str())
                })
        };
        shared(Kind::Email, &a.email, &b.email)
            || shared(Kind::Phone, &a.phone, &b.phone)
            || joined(a, b)
            || joined(b, a)
    }

    /// Points every live row at its cluster's primary; rows whose link changes are updated `now`.
    fn relink(&mut self, now: i64) {
        for i in self.live().collect::<Vec<_>>() {
            let primary = self.rows[self.cluster(i)[0]].id;
            let want = (primary != self.rows[i].id).then_some(primary);
            if self.rows[i].linked_id != want {
                self.rows[i].linked_id = want;
                self.rows[i].updated_at = Timestamp(now);
            }
        }
    }

    /// Whether some live row holds `value` in the field `held` picks.
    fn is_held(&self, held: fn(&Row) -> &Option<String>, value: &str) -> bool {
        self.live()
            .any(|i| held(&self.rows[i]).as_deref() == Some(value))
    }

    fn push(
        &mut self,
        email: Option<&str>,
        phone: Option<&str>,
        linked_id: Option<Id>,
        now: i64,
    ) -> usize {
        let id = self.rows.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        self.rows.push(Row {
            id,
            email: email.map(str::to_owned),
            phone: phone.map(str::to_owned),
            linked_id,
            created_at: Timestamp(now),
            updated_at: Timestamp(now),
            deleted_at: None,
        });
        self.rows.len() - 1
    }

    fn remember(&mut self, email: &str, phone: &str) {
        let join = (email.to_owned(), phone.to_owned());
        if !self.joins.contains(&join) {
            self.joins.push(join);
        }
    }

    /// Time never goes backwards: nothing new is stamped earlier than any stamp already written.
    fn effective(&self, now: i64) -> i64 {
        let stamps = self
            .rows
            .iter()
            .flat_map(|r| [Some(r.created_at), Some(r.updated_at), r.deleted_at]);
        let erased = self.erased.values().map(|t| t.0);
        stamps
            .flatten()
            .map(|t| t.0)
            .chain(erased)
            .fold(now, i64::max)
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.rows.len()).filter(|&i| is_live(&self.rows[i]))
    }
}

/// A row's value of `kind`.
fn field(row: &Row, kind: Kind) -> Option<&str> {
    match kind {
        Kind::Email => row.email.as_deref(),
        Kind::Phone => row.phone.as_deref(),
    }
}

/// Whether a row's identifier equals a request's (an absent one equals nothing).
fn same(held: &Option<String>, asked: Option<&str>) -> bool {
    asked.is_some() && held.as_deref() == asked
}

fn push_distinct(list: &mut Vec<String>, value: &Option<String>) {
    if let Some(v) = value {
        if !list.contains(v) {
            list.push(v.clone());
        }
    }
}
