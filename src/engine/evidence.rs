//! Why contacts are one identity, for the console: the graph of a cluster's evidence, the
//! shortest chain of evidence between two contacts, and figures for the overview. Reads only;
//! each answer costs the size of one cluster (its members, values, joins and links), never the
//! table, except [`Engine::largest_clusters`], which walks a caller-chosen range of slots.

use std::collections::VecDeque;
use std::ops::Range;

use hashbrown::HashMap;
use serde::Serialize;

use super::forest::Slot;
use super::interner::Sym;
use super::{Contact, ContactId, Engine, Kind, Timestamp, NONE};

/// One node of a cluster's graph: a live contact with its row, or a value its members hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(crate) enum GraphNode {
    Contact {
        /// `contact:<id>`, what edges name.
        id: String,
        primary: bool,
        row: Contact,
    },
    Value {
        /// `email:<value>` or `phoneNumber:<value>`.
        id: String,
        kind: Kind,
        value: String,
        /// A blocked value is evidence of nothing: it is held, but links nobody.
        blocked: bool,
    },
}

/// One piece of evidence between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(crate) enum GraphEdge {
    /// A contact holds a value.
    Holds { source: String, target: String },
    /// A request named this email and phone together. `madeAt` is null for joins logged by
    /// versions before joins carried the time they were made.
    #[serde(rename_all = "camelCase")]
    Join {
        source: String,
        target: String,
        made_at: Option<Timestamp>,
    },
    /// An imported row-to-row link (a secondary's `linkedId` in an import).
    Link { source: String, target: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ClusterGraph {
    pub primary: ContactId,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

/// What ties one contact of a chain to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "evidence", rename_all = "camelCase")]
pub(crate) enum Evidence {
    /// Both hold this email.
    Email { email: String },
    /// Both hold this phone number.
    #[serde(rename_all = "camelCase")]
    PhoneNumber { phone_number: String },
    /// One holds the email, the other the phone, and a request named them together.
    #[serde(rename_all = "camelCase")]
    Join {
        email: String,
        phone_number: String,
        made_at: Option<Timestamp>,
    },
    /// An imported link between the two rows.
    Link,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Hop {
    pub from: ContactId,
    pub to: ContactId,
    #[serde(flatten)]
    pub evidence: Evidence,
}

/// The answer of "why": None when the contacts are in different clusters.
pub(crate) type Chain = Option<Vec<Hop>>;

/// Why a graph or a chain could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EvidenceError {
    /// Unknown or deleted.
    NoLiveContact(ContactId),
}

/// A cluster: its size and its primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ClusterSize {
    pub primary: ContactId,
    pub size: usize,
}

/// Blocked values by reason, for the overview.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct BlockedCounts {
    pub admin: usize,
    pub generic: usize,
}

/// The values one cluster's members hold, each with its holders (local indexes into members).
struct ClusterValues {
    members: Vec<Slot>,
    emails: HashMap<Sym, Vec<usize>>,
    phones: HashMap<Sym, Vec<usize>>,
}

impl Engine {
    /// Blocked values by reason.
    pub(crate) fn blocked_counts(&self) -> BlockedCounts {
        let stats = self.guard_stats();
        BlockedCounts {
            admin: stats.blocked_admin,
            generic: stats.blocked_generic,
        }
    }

    /// When the join of `email` and `phone` was made, if known.
    fn join_made_at(&self, email: Sym, phone: Sym) -> Option<Timestamp> {
        (self.join_times.get(&super::join_key(email, phone))).map(|&at| Timestamp(at))
    }

    fn live_slot_of(&self, id: ContactId) -> Result<Slot, EvidenceError> {
        self.live_slot(id)
            .map_err(|_| EvidenceError::NoLiveContact(id))
    }

    fn cluster_values(&self, slot: Slot) -> ClusterValues {
        let members = self.forest.members(slot).to_vec();
        let mut emails: HashMap<Sym, Vec<usize>> = HashMap::new();
        let mut phones: HashMap<Sym, Vec<usize>> = HashMap::new();
        for (i, &s) in members.iter().enumerate() {
            let row = &self.rows[s as usize];
            if row.email != NONE {
                emails.entry(row.email).or_default().push(i);
            }
            if row.phone != NONE {
                phones.entry(row.phone).or_default().push(i);
            }
        }
        ClusterValues {
            members,
            emails,
            phones,
        }
    }

    fn value_id(&self, kind: Kind, sym: Sym) -> String {
        format!("{}:{}", kind.field(), self.index(kind).resolve(sym))
    }

    /// The joins among a cluster's values, each once: (email, phone).
    fn cluster_joins(&self, values: &ClusterValues) -> Vec<(Sym, Sym)> {
        let mut joins = Vec::new();
        for email in values.emails.keys() {
            for phone in self.joins_by_email.get(email).into_iter().flatten() {
                if values.phones.contains_key(phone) {
                    joins.push((*email, *phone));
                }
            }
        }
        joins
    }

    /// The evidence of `id`'s cluster as nodes and edges: members oldest first, then values.
    pub(crate) fn cluster_graph(&self, id: ContactId) -> Result<ClusterGraph, EvidenceError> {
        let slot = self.live_slot_of(id)?;
        let values = self.cluster_values(slot);
        let primary = self.rows[values.members[0] as usize].id;
        let contact_id = |s: Slot| format!("contact:{}", self.rows[s as usize].id);
        let mut nodes = Vec::with_capacity(values.members.len() * 2);
        let mut edges = Vec::with_capacity(values.members.len() * 2);
        for &s in &values.members {
            nodes.push(GraphNode::Contact {
                id: contact_id(s),
                primary: s == values.members[0],
                row: self.contact_at(s),
            });
        }
        let kinds = [(Kind::Email, &values.emails), (Kind::Phone, &values.phones)];
        for (kind, holders) in kinds {
            let mut syms: Vec<&Sym> = holders.keys().collect();
            syms.sort_unstable_by_key(|s| holders[*s][0]);
            for &sym in syms {
                let id = self.value_id(kind, sym);
                for &i in &holders[&sym] {
                    edges.push(GraphEdge::Holds {
                        source: contact_id(values.members[i]),
                        target: id.clone(),
                    });
                }
                nodes.push(GraphNode::Value {
                    id,
                    kind,
                    value: self.index(kind).resolve(sym).to_owned(),
                    blocked: self.is_blocked(kind, sym),
                });
            }
        }
        for (email, phone) in self.cluster_joins(&values) {
            edges.push(GraphEdge::Join {
                source: self.value_id(Kind::Email, email),
                target: self.value_id(Kind::Phone, phone),
                made_at: self.join_made_at(email, phone),
            });
        }
        for &a in &values.members {
            for &b in self.links.get(&a).into_iter().flatten() {
                if a < b {
                    edges.push(GraphEdge::Link {
                        source: contact_id(a),
                        target: contact_id(b),
                    });
                }
            }
        }
        Ok(ClusterGraph {
            primary,
            nodes,
            edges,
        })
    }

    /// The shortest chain of evidence from `a` to `b` (fewest hops between contacts), each
    /// hop naming what ties the two; None when they are in different clusters. A breadth-first
    /// search over the one cluster, each value's holders visited once.
    pub(crate) fn evidence_chain(
        &self,
        a: ContactId,
        b: ContactId,
    ) -> Result<Chain, EvidenceError> {
        let (sa, sb) = (self.live_slot_of(a)?, self.live_slot_of(b)?);
        if self.forest.find(sa) != self.forest.find(sb) {
            return Ok(None);
        }
        let values = self.cluster_values(sa);
        let local: HashMap<Slot, usize> = values
            .members
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i))
            .collect();
        let (start, goal) = (local[&sa], local[&sb]);
        let mut came_from: Vec<Option<(usize, Evidence)>> = vec![None; values.members.len()];
        let mut seen = vec![false; values.members.len()];
        let mut spent_emails = hashbrown::HashSet::new();
        let mut spent_phones = hashbrown::HashSet::new();
        let mut queue = VecDeque::from([start]);
        seen[start] = true;
        while let Some(i) = queue.pop_front() {
            if i == goal {
                break;
            }
            let mut reach = |j: usize, why: &dyn Fn() -> Evidence| {
                if !seen[j] {
                    seen[j] = true;
                    came_from[j] = Some((i, why()));
                    queue.push_back(j);
                }
            };
            let row = &self.rows[values.members[i] as usize];
            let email = (row.email != NONE && !self.is_blocked(Kind::Email, row.email))
                .then_some(row.email);
            let phone = (row.phone != NONE && !self.is_blocked(Kind::Phone, row.phone))
                .then_some(row.phone);
            if let Some(e) = email.filter(|&e| spent_emails.insert(e)) {
                let text = self.emails.resolve(e);
                for &j in &values.emails[&e] {
                    reach(j, &|| Evidence::Email {
                        email: text.to_owned(),
                    });
                }
                for &p in self.joins_by_email.get(&e).into_iter().flatten() {
                    if self.is_blocked(Kind::Phone, p) {
                        continue;
                    }
                    for &j in values.phones.get(&p).into_iter().flatten() {
                        reach(j, &|| self.join_evidence(e, p));
                    }
                }
            }
            if let Some(p) = phone.filter(|&p| spent_phones.insert(p)) {
                let text = self.phones.resolve(p);
                for &j in &values.phones[&p] {
                    reach(j, &|| Evidence::PhoneNumber {
                        phone_number: text.to_owned(),
                    });
                }
                for &e in self.joins_by_phone.get(&p).into_iter().flatten() {
                    if self.is_blocked(Kind::Email, e) {
                        continue;
                    }
                    for &j in values.emails.get(&e).into_iter().flatten() {
                        reach(j, &|| self.join_evidence(e, p));
                    }
                }
            }
            for other in self.links.get(&values.members[i]).into_iter().flatten() {
                if let Some(&j) = local.get(other) {
                    reach(j, &|| Evidence::Link);
                }
            }
        }
        Ok(Some(self.walk_back(&values.members, came_from, goal)))
    }

    fn join_evidence(&self, email: Sym, phone: Sym) -> Evidence {
        Evidence::Join {
            email: self.emails.resolve(email).to_owned(),
            phone_number: self.phones.resolve(phone).to_owned(),
            made_at: self.join_made_at(email, phone),
        }
    }

    /// The hops from the search's start to `goal`, in order.
    fn walk_back(
        &self,
        members: &[Slot],
        mut came_from: Vec<Option<(usize, Evidence)>>,
        goal: usize,
    ) -> Vec<Hop> {
        let id = |i: usize| self.rows[members[i] as usize].id;
        let mut hops = Vec::new();
        let mut at = goal;
        while let Some((prev, evidence)) = came_from[at].take() {
            hops.push(Hop {
                from: id(prev),
                to: id(at),
                evidence,
            });
            at = prev;
        }
        hops.reverse();
        hops
    }

    /// Whether a row (live or deleted) has this id.
    pub(crate) fn has_contact(&self, id: ContactId) -> bool {
        self.slot(id).is_ok()
    }

    /// The number of slots, for walking [`Engine::largest_clusters`] in ranges.
    pub fn slots(&self) -> usize {
        self.rows.len()
    }

    /// Adds the clusters of two or more members whose root lies in `range` to `top`, keeping
    /// only the `n` largest (ties: the older primary first). A caller walks the table in ranges
    /// so that no single call holds the engine for long.
    pub(crate) fn largest_clusters(
        &self,
        range: Range<usize>,
        n: usize,
        top: &mut Vec<ClusterSize>,
    ) {
        let end = range.end.min(self.rows.len());
        for slot in range.start.min(end)..end {
            let slot = slot as Slot;
            if self.forest.is_alone(slot) || self.forest.find(slot) != slot {
                continue;
            }
            let members = self.forest.members(slot);
            let smallest = top.last().map_or(0, |c| c.size);
            if top.len() == n && members.len() <= smallest {
                continue;
            }
            // A cluster that grew between two calls of a walk is listed once, as last seen.
            let primary = self.rows[members[0] as usize].id;
            top.retain(|c| c.primary != primary);
            top.push(ClusterSize {
                primary,
                size: members.len(),
            });
            top.sort_by(|x, y| y.size.cmp(&x.size).then(x.primary.cmp(&y.primary)));
            top.truncate(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Change, NewContact, Query};

    fn identify(engine: &mut Engine, email: Option<&str>, phone: Option<&str>) -> ContactId {
        let query = Query::new(
            email.map(|e| crate::engine::Email::parse(e).unwrap().unwrap()),
            phone.map(|p| crate::engine::Phone::parse(p).unwrap().unwrap()),
        )
        .unwrap();
        let plan = engine
            .plan_identify(&query, Timestamp(1_000 + engine.max_id() as i64))
            .unwrap();
        for change in &plan.changes {
            engine.apply(change).unwrap();
        }
        plan.answer
    }

    /// 1 (a, 1) and 2 (b, 2) joined by the request (a, 2); 3 (b, 3) shares email b with 2.
    fn joined_cluster() -> Engine {
        let mut e = Engine::new();
        identify(&mut e, Some("a@x.io"), Some("1"));
        identify(&mut e, Some("b@x.io"), Some("2"));
        identify(&mut e, Some("a@x.io"), Some("2"));
        identify(&mut e, Some("b@x.io"), Some("3"));
        e
    }

    #[test]
    fn a_graph_holds_every_member_value_join_and_link() {
        let mut e = joined_cluster();
        e.apply(&Change::Created(NewContact {
            id: 9,
            email: Some("z@x.io".into()),
            phone: None,
            linked_id: None,
            created_at: Timestamp(5_000),
            updated_at: Timestamp(5_000),
            deleted_at: None,
        }))
        .unwrap();
        e.apply(&Change::Linked { a: 9, b: 3 }).unwrap();
        let graph = e.cluster_graph(3).unwrap();
        assert_eq!(graph.primary, 1);
        let contacts = graph
            .nodes
            .iter()
            .filter(|n| matches!(n, GraphNode::Contact { .. }))
            .count();
        assert_eq!((contacts, graph.nodes.len()), (4, 4 + 3 + 3));
        let count = |f: fn(&GraphEdge) -> bool| graph.edges.iter().filter(|e| f(e)).count();
        assert_eq!(count(|e| matches!(e, GraphEdge::Holds { .. })), 7);
        assert_eq!(count(|e| matches!(e, GraphEdge::Join { .. })), 1);
        assert_eq!(count(|e| matches!(e, GraphEdge::Link { .. })), 1);
    }

    #[test]
    fn the_chain_across_a_join_names_the_join() {
        let e = joined_cluster();
        let chain = e.evidence_chain(1, 3).unwrap().unwrap();
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert_eq!((chain[0].from, chain[1].to), (1, 3));
        assert!(
            matches!(&chain[0].evidence, Evidence::Join { email, phone_number, .. }
            if email == "a@x.io" && phone_number == "2")
        );
        assert!(matches!(&chain[1].evidence, Evidence::Email { email } if email == "b@x.io"));
    }

    #[test]
    fn contacts_of_different_clusters_have_no_chain() {
        let mut e = joined_cluster();
        let other = identify(&mut e, Some("other@x.io"), None);
        assert_eq!(e.evidence_chain(1, other), Ok(None));
        assert_eq!(e.evidence_chain(2, 2), Ok(Some(vec![])));
        assert_eq!(
            e.evidence_chain(1, 99),
            Err(EvidenceError::NoLiveContact(99))
        );
    }

    #[test]
    fn the_largest_clusters_come_first_and_walk_in_ranges() {
        let mut e = joined_cluster();
        identify(&mut e, Some("d@x.io"), Some("7"));
        identify(&mut e, Some("e@x.io"), Some("7"));
        identify(&mut e, Some("lonely@x.io"), None);
        let mut top = Vec::new();
        for start in (0..e.slots()).step_by(2) {
            e.largest_clusters(start..start + 2, 10, &mut top);
        }
        let sizes: Vec<(ContactId, usize)> = top.iter().map(|c| (c.primary, c.size)).collect();
        assert_eq!(sizes, vec![(1, 3), (4, 2)]);
    }
}
