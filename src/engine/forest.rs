//! A disjoint-set forest over contact slots: union by size, path halving, the members of each set
//! in a circular list, and on each root a label naming the set's primary (its oldest member).
//! A slot can also be removed for good (a deleted row), which costs no memory of its own.
//!
//! Union by size picks the root for speed; the label says who is primary, so "the root carries
//! the oldest contact" holds for readers without giving up the size rule.

/// An index into the engine's rows, dense from 0.
pub type Slot = u32;

/// One slot's place in the forest, all in one place: `find` on a singleton (most contacts) and
/// everything a reader then needs of its root (label, members) is one cache line.
#[derive(Clone, Copy, Debug)]
struct Node {
    parent: Slot,
    /// The member after this one in its set's circular list.
    next: Slot,
    /// At a root: the number of members; 0 marks a removed slot (a deleted row).
    size: u32,
    /// At a root: the slot of the set's primary.
    label: Slot,
}

impl Node {
    fn alone(slot: Slot) -> Node {
        Node {
            parent: slot,
            next: slot,
            size: 1,
            label: slot,
        }
    }
}

#[derive(Default, Debug, Clone)]
pub struct Forest {
    nodes: Vec<Node>,
}

impl Forest {
    /// Adds a slot as a set of its own and returns it.
    pub fn push(&mut self) -> Slot {
        let slot = self.nodes.len() as Slot;
        self.nodes.push(Node::alone(slot));
        slot
    }

    pub fn reserve(&mut self, additional: usize) {
        self.nodes.reserve(additional);
    }

    /// The root of `x`'s set, without changing anything (for readers).
    pub fn find(&self, mut x: Slot) -> Slot {
        loop {
            let parent = self.nodes[x as usize].parent;
            if parent == x {
                return x;
            }
            x = parent;
        }
    }

    /// The root of `x`'s set, halving the path on the way.
    pub fn find_mut(&mut self, mut x: Slot) -> Slot {
        loop {
            let parent = self.nodes[x as usize].parent;
            if parent == x {
                return x;
            }
            let grandparent = self.nodes[parent as usize].parent;
            self.nodes[x as usize].parent = grandparent;
            x = grandparent;
        }
    }

    /// The primary of `x`'s set.
    pub fn primary(&self, x: Slot) -> Slot {
        self.nodes[self.find(x) as usize].label
    }

    /// Joins the sets of `a` and `b`; the new label is the older of the two labels by `older`.
    /// Returns true if they were two sets.
    pub fn union(&mut self, a: Slot, b: Slot, older: impl Fn(Slot, Slot) -> bool) -> bool {
        let (ra, rb) = (self.find_mut(a), self.find_mut(b));
        if ra == rb {
            return false;
        }
        let (big, small) = if self.nodes[ra as usize].size >= self.nodes[rb as usize].size {
            (ra as usize, rb as usize)
        } else {
            (rb as usize, ra as usize)
        };
        let (la, lb) = (self.nodes[big].label, self.nodes[small].label);
        self.nodes[small].parent = big as Slot;
        self.nodes[big].size += self.nodes[small].size;
        self.nodes[big].label = if older(lb, la) { lb } else { la };
        // Splicing two circular lists is one swap of successors.
        let next_big = self.nodes[big].next;
        self.nodes[big].next = self.nodes[small].next;
        self.nodes[small].next = next_big;
        true
    }

    /// The members of `x`'s set, `x` first, in no particular order.
    pub fn members(&self, x: Slot) -> Members<'_> {
        Members {
            nodes: &self.nodes,
            start: x,
            at: Some(x),
        }
    }

    /// Whether `x`'s set has no other member.
    pub fn is_alone(&self, x: Slot) -> bool {
        self.nodes[x as usize].next == x
    }

    /// Makes each of `slots` a set of its own. `slots` must be whole sets (every member of every
    /// set it touches), or members left out would point at a slot that no longer leads to them.
    pub fn isolate(&mut self, slots: &[Slot]) {
        for &s in slots {
            self.nodes[s as usize] = Node::alone(s);
        }
    }

    /// Takes `x`, which must be a set of its own, out of every set for good: it stays alone and
    /// is never joined again (a deleted row).
    pub fn remove(&mut self, x: Slot) {
        debug_assert!(self.is_alone(x) && self.find(x) == x);
        self.nodes[x as usize].size = 0;
    }

    /// Whether `x` was removed.
    pub fn is_removed(&self, x: Slot) -> bool {
        self.nodes[x as usize].size == 0
    }

    /// The number of members of `x`'s set.
    #[cfg(test)]
    pub fn set_size(&self, x: Slot) -> u32 {
        self.nodes[self.find(x) as usize].size
    }
}

/// Iterator over one set's circular member list.
pub struct Members<'a> {
    nodes: &'a [Node],
    start: Slot,
    at: Option<Slot>,
}

impl Iterator for Members<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        let here = self.at?;
        let after = self.nodes[here as usize].next;
        self.at = (after != self.start).then_some(after);
        Some(here)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forest(n: usize) -> Forest {
        let mut f = Forest::default();
        for _ in 0..n {
            f.push();
        }
        f
    }

    fn sorted_members(f: &Forest, x: Slot) -> Vec<Slot> {
        let mut m: Vec<_> = f.members(x).collect();
        m.sort();
        m
    }

    #[test]
    fn union_keeps_the_older_label_whatever_the_sizes() {
        let mut f = forest(4);
        let lower_is_older = |a: Slot, b: Slot| a < b;
        f.union(1, 2, lower_is_older);
        f.union(2, 3, lower_is_older);
        f.union(3, 0, lower_is_older);
        assert_eq!(f.primary(2), 0);
        assert_eq!(f.set_size(0), 4);
        assert_eq!(sorted_members(&f, 3), vec![0, 1, 2, 3]);
    }

    #[test]
    fn union_of_one_set_with_itself_changes_nothing() {
        let mut f = forest(2);
        assert!(f.union(0, 1, |a, b| a < b));
        assert!(!f.union(1, 0, |a, b| a < b));
        assert_eq!(f.set_size(1), 2);
    }

    #[test]
    fn isolating_a_whole_set_splits_it_back_into_singletons() {
        let mut f = forest(3);
        f.union(0, 1, |a, b| a < b);
        f.union(1, 2, |a, b| a < b);
        f.isolate(&[0, 1, 2]);
        for s in 0..3 {
            assert_eq!(sorted_members(&f, s), vec![s]);
            assert_eq!(f.primary(s), s);
        }
    }

    #[test]
    fn a_removed_slot_stays_alone_and_the_rest_are_untouched() {
        let mut f = forest(3);
        f.union(0, 1, |a, b| a < b);
        f.remove(2);
        assert!(f.is_removed(2) && !f.is_removed(0) && !f.is_removed(1));
        assert_eq!(sorted_members(&f, 2), vec![2]);
        assert_eq!(sorted_members(&f, 1), vec![0, 1]);
    }
}
