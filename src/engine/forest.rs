//! A disjoint-set forest over contact slots: union by size, path halving, the members of each set
//! in a circular list, and on each root a label naming the set's primary (its oldest member).
//!
//! Union by size picks the root for speed; the label says who is primary, so "the root carries
//! the oldest contact" holds for readers without giving up the size rule.

/// An index into the engine's rows, dense from 0.
pub type Slot = u32;

#[derive(Default, Debug, Clone)]
pub struct Forest {
    parent: Vec<Slot>,
    size: Vec<u32>,
    /// `next[x]` is the member after `x` in its set's circular list.
    next: Vec<Slot>,
    /// At a root: the slot of the set's primary.
    label: Vec<Slot>,
}

impl Forest {
    /// Adds a slot as a set of its own and returns it.
    pub fn push(&mut self) -> Slot {
        let slot = self.parent.len() as Slot;
        self.parent.push(slot);
        self.size.push(1);
        self.next.push(slot);
        self.label.push(slot);
        slot
    }

    /// The root of `x`'s set, without changing anything (for readers).
    pub fn find(&self, mut x: Slot) -> Slot {
        while self.parent[x as usize] != x {
            x = self.parent[x as usize];
        }
        x
    }

    /// The root of `x`'s set, halving the path on the way.
    pub fn find_mut(&mut self, mut x: Slot) -> Slot {
        while self.parent[x as usize] != x {
            let grandparent = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
        x
    }

    /// The primary of `x`'s set.
    pub fn primary(&self, x: Slot) -> Slot {
        self.label[self.find(x) as usize]
    }

    /// Joins the sets of `a` and `b`; the new label is the older of the two labels by `older`.
    /// Returns true if they were two sets.
    pub fn union(&mut self, a: Slot, b: Slot, older: impl Fn(Slot, Slot) -> bool) -> bool {
        let (ra, rb) = (self.find_mut(a), self.find_mut(b));
        if ra == rb {
            return false;
        }
        let (big, small) = if self.size[ra as usize] >= self.size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        let (la, lb) = (self.label[big as usize], self.label[small as usize]);
        self.parent[small as usize] = big;
        self.size[big as usize] += self.size[small as usize];
        self.label[big as usize] = if older(lb, la) { lb } else { la };
        // Splicing two circular lists is one swap of successors.
        self.next.swap(big as usize, small as usize);
        true
    }

    /// The members of `x`'s set, `x` first, in no particular order.
    pub fn members(&self, x: Slot) -> Members<'_> {
        Members {
            next: &self.next,
            start: x,
            at: Some(x),
        }
    }

    /// Makes each of `slots` a set of its own. `slots` must be whole sets (every member of every
    /// set it touches), or members left out would point at a slot that no longer leads to them.
    pub fn isolate(&mut self, slots: &[Slot]) {
        for &s in slots {
            let i = s as usize;
            self.parent[i] = s;
            self.size[i] = 1;
            self.next[i] = s;
            self.label[i] = s;
        }
    }

    /// The number of members of `x`'s set.
    #[cfg(test)]
    pub fn set_size(&self, x: Slot) -> u32 {
        self.size[self.find(x) as usize]
    }
}

/// Iterator over one set's circular member list.
pub struct Members<'a> {
    next: &'a [Slot],
    start: Slot,
    at: Option<Slot>,
}

impl Iterator for Members<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        let here = self.at?;
        let after = self.next[here as usize];
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
}
