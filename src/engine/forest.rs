//! A disjoint-set forest over contact slots: union by size, path halving, on each root a label
//! naming the set's primary (its oldest member), and the members of each set of two or more in
//! one array, oldest first. A slot can also be removed for good (a deleted row), which costs no
//! memory of its own.
//!
//! Union by size picks the root for speed; the label says who is primary, so "the root carries
//! the oldest contact" holds for readers without giving up the size rule. Members in one array
//! in age order make an answer a walk along memory with no sort: a linked list of members cost
//! the link path one dependent cache miss per member before any sorting began.

/// An index into the engine's rows, dense from 0.
pub type Slot = u32;

/// Marks a node with no member array: a set of one, or a slot that is not a root.
pub(crate) const NO_LIST: u32 = u32::MAX;

/// One slot's place in the forest, all in one place: `find` on a singleton (most contacts) and
/// everything a reader then needs of its root is one cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub parent: Slot,
    /// At a root of two or more: the index of its member array in `Forest::lists`.
    pub list: u32,
    /// At a root: the number of members; 0 marks a removed slot (a deleted row).
    pub size: u32,
    /// At a root: the slot of the set's primary.
    pub label: Slot,
}

impl Node {
    fn alone(slot: Slot) -> Node {
        Node {
            parent: slot,
            list: NO_LIST,
            size: 1,
            label: slot,
        }
    }
}

#[derive(Default, Debug, Clone)]
pub(crate) struct Forest {
    nodes: Vec<Node>,
    /// The members of each set of two or more, oldest first; an empty array is free for reuse.
    lists: Vec<Vec<Slot>>,
    free: Vec<u32>,
    /// How many sets there are of each size, for the largest; not in an image: `recount`
    /// rebuilds it.
    sizes: SizeCensus,
}

/// The number of sets of each size and the largest size: kept as sets join and split, so the
/// largest cluster is known without a scan.
#[derive(Default, Debug, Clone)]
struct SizeCensus {
    /// `sets[k]`: how many sets have `k` members.
    sets: Vec<u32>,
    largest: usize,
}

impl SizeCensus {
    fn add(&mut self, size: usize) {
        if self.sets.len() <= size {
            self.sets.resize(size + 1, 0);
        }
        self.sets[size] += 1;
        self.largest = self.largest.max(size);
    }

    fn take(&mut self, size: usize) {
        self.sets[size] -= 1;
        while self.largest > 0 && self.sets[self.largest] == 0 {
            self.largest -= 1;
        }
    }
}

impl Forest {
    /// Adds a slot as a set of its own and returns it.
    pub fn push(&mut self) -> Slot {
        let slot = self.nodes.len() as Slot;
        self.nodes.push(Node::alone(slot));
        self.sizes.add(1);
        slot
    }

    /// Counts the sets again (after loading a forest, whose census is not saved).
    pub(crate) fn recount(&mut self) {
        self.sizes = SizeCensus::default();
        for (x, node) in self.nodes.iter().enumerate() {
            if node.parent as usize == x && node.size > 0 {
                self.sizes.add(node.size as usize);
            }
        }
    }

    /// The number of members of the largest set (0 when every slot is removed).
    pub fn largest(&self) -> usize {
        self.sizes.largest
    }

    /// The number of members of `x`'s set.
    pub fn size(&self, x: Slot) -> usize {
        self.nodes[self.find(x) as usize].size as usize
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
    pub(crate) fn find_mut(&mut self, mut x: Slot) -> Slot {
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

    /// Joins the sets of `a` and `b`, keeping the members in order by `older` (a strict total
    /// order: "is older than"); the label is the oldest. Returns true if they were two sets.
    ///
    /// The smaller set's members are placed into the larger's array by binary search and one
    /// copy of the array; a member younger than all (a new contact) is simply appended.
    pub fn union(&mut self, a: Slot, b: Slot, older: impl Fn(Slot, Slot) -> bool) -> bool {
        let (ra, rb) = (self.find_mut(a), self.find_mut(b));
        if ra == rb {
            return false;
        }
        let (big, small) = if self.nodes[ra as usize].size >= self.nodes[rb as usize].size {
            (ra, rb)
        } else {
            (rb, ra)
        };
        let list = match self.nodes[big as usize].list {
            NO_LIST => self.new_list(big),
            list => list,
        };
        let incoming = match self.nodes[small as usize].list {
            NO_LIST => vec![small],
            list => {
                self.free.push(list);
                std::mem::take(&mut self.lists[list as usize])
            }
        };
        let members = &mut self.lists[list as usize];
        merge_into(members, &incoming, &older);
        let label = members[0];
        let small_size = self.nodes[small as usize].size;
        let big_size = self.nodes[big as usize].size;
        // The joined size first: taking the old largest then finds the new one at once, where
        // taking first would walk down every size below it.
        self.sizes.add((small_size + big_size) as usize);
        self.sizes.take(small_size as usize);
        self.sizes.take(big_size as usize);
        self.nodes[small as usize] = Node {
            parent: big,
            list: NO_LIST,
            ..self.nodes[small as usize]
        };
        let root = &mut self.nodes[big as usize];
        root.size += small_size;
        root.list = list;
        root.label = label;
        true
    }

    /// A member array holding just `root`, in a free place if there is one.
    fn new_list(&mut self, root: Slot) -> u32 {
        match self.free.pop() {
            Some(list) => {
                self.lists[list as usize].push(root);
                list
            }
            None => {
                self.lists.push(vec![root]);
                (self.lists.len() - 1) as u32
            }
        }
    }

    /// The members of `x`'s set, oldest first.
    pub fn members(&self, x: Slot) -> &[Slot] {
        let root = self.find(x);
        match self.nodes[root as usize].list {
            // A set of one: the root itself, which is its own parent.
            NO_LIST => std::slice::from_ref(&self.nodes[root as usize].parent),
            list => &self.lists[list as usize],
        }
    }

    /// Whether `x`'s set has no other member.
    pub(crate) fn is_alone(&self, x: Slot) -> bool {
        let node = &self.nodes[x as usize];
        node.parent == x && node.list == NO_LIST
    }

    /// Makes each of `slots` a set of its own. `slots` must be whole sets (every member of every
    /// set it touches), or members left out would point at a slot that no longer leads to them.
    pub(crate) fn isolate(&mut self, slots: &[Slot]) {
        for &s in slots {
            let node = self.nodes[s as usize];
            if node.parent == s {
                self.sizes.take(node.size as usize);
            }
        }
        for &s in slots {
            self.sizes.add(1);
            let list = self.nodes[s as usize].list;
            if list != NO_LIST {
                self.lists[list as usize] = Vec::new();
                self.free.push(list);
            }
            self.nodes[s as usize] = Node::alone(s);
        }
    }

    /// Takes `x`, which must be a set of its own, out of every set for good: it stays alone and
    /// is never joined again (a deleted row).
    pub fn remove(&mut self, x: Slot) {
        debug_assert!(self.is_alone(x));
        self.sizes.take(1);
        self.nodes[x as usize].size = 0;
    }

    /// Whether `x` was removed.
    pub(crate) fn is_removed(&self, x: Slot) -> bool {
        self.nodes[x as usize].size == 0
    }

    /// A forest from an image's tables, unchecked: [`Forest::check`] it before any other use.
    pub fn from_parts(nodes: Vec<Node>, lists: Vec<Vec<Slot>>, free: Vec<u32>) -> Forest {
        // The census of sizes is counted once the forest is checked (`recount`): a damaged
        // size must not size an allocation.
        Forest {
            nodes,
            lists,
            free,
            sizes: SizeCensus::default(),
        }
    }

    /// The tables as they are, for an image.
    pub fn parts(&self) -> (&[Node], &[Vec<Slot>], &[u32]) {
        (&self.nodes, &self.lists, &self.free)
    }

    /// Checks a forest read from an image for `slots` slots whose age order is `older`:
    /// - every slot, label and member array a node names exists, and every slot reaches a root
    ///   (no cycle: union by size keeps a path under 32 steps);
    /// - a root's size is the number of slots that reach it (0 for a removed slot, which no
    ///   other slot reaches); a root of one has no member array and is its own label;
    /// - a root of two or more has a member array of its own (no other root's) holding exactly
    ///   the slots that reach it, oldest (its label) first, strictly in age order;
    /// - every other array is empty and listed once in the free list, which lists nothing else.
    ///
    /// Returns how many live sets and removed slots there are.
    pub fn check(
        &self,
        slots: usize,
        older: impl Fn(Slot, Slot) -> bool,
    ) -> Result<Census, String> {
        let slot_ok = |s: Slot| (s as usize) < slots;
        let list_ok = |l: u32| l == NO_LIST || (l as usize) < self.lists.len();
        if self.nodes.len() != slots {
            return Err(format!(
                "the forest has {} nodes for {slots} rows",
                self.nodes.len()
            ));
        }
        let named = |node: &Node| slot_ok(node.parent) && slot_ok(node.label) && list_ok(node.list);
        if let Some(x) = self.nodes.iter().position(|node| !named(node)) {
            return Err(format!(
                "the forest's node of slot {x} names what does not exist"
            ));
        }
        // Each slot's root, and how many live slots reach each root.
        let (mut top, mut reached) = (vec![0; slots], vec![0u32; slots]);
        for (x, node) in self.nodes.iter().enumerate() {
            let root = node.parent as usize == x;
            if !root && (node.list != NO_LIST || node.size == 0) {
                return Err(format!("slot {x} is not a root but is marked as one"));
            }
            top[x] = self
                .root_within(x as Slot, 64)
                .ok_or_else(|| format!("slot {x} reaches no root (a cycle of parents)"))?;
            if !root || node.size != 0 {
                reached[top[x] as usize] += 1;
            }
        }
        let mut used = vec![false; self.lists.len()];
        let mut census = Census::default();
        for (x, node) in self.nodes.iter().enumerate() {
            if node.parent as usize != x {
                continue;
            }
            if node.size != reached[x] {
                return Err(format!(
                    "the set of slot {x} says {} members, {} slots reach it",
                    node.size, reached[x]
                ));
            }
            match node.size {
                0 => census.removed += 1,
                _ => census.sets += 1,
            }
            if node.list == NO_LIST {
                if node.size > 1 || node.label as usize != x {
                    return Err(format!("the set of slot {x} has no member array"));
                }
                continue;
            }
            if std::mem::replace(&mut used[node.list as usize], true) {
                return Err(format!("two sets share member array {}", node.list));
            }
            self.check_members(x as Slot, node, &top, &older)?;
        }
        self.check_free(&used)?;
        Ok(census)
    }

    /// The member array of root `root` holds exactly the slots that reach it (as many as its
    /// size, each reaching it, strictly in age order so none twice), its label first.
    fn check_members(
        &self,
        root: Slot,
        node: &Node,
        top: &[Slot],
        older: &impl Fn(Slot, Slot) -> bool,
    ) -> Result<(), String> {
        let members = &self.lists[node.list as usize];
        let whole = members.len() == node.size as usize
            && members.first() == Some(&node.label)
            && (members.iter()).all(|&m| top.get(m as usize) == Some(&root))
            && members.windows(2).all(|w| older(w[0], w[1]));
        if whole {
            Ok(())
        } else {
            Err(format!(
                "the member array of slot {root} is not exactly its members in age order"
            ))
        }
    }

    /// Every array no set uses is empty and listed once in the free list; nothing else is.
    fn check_free(&self, used: &[bool]) -> Result<(), String> {
        let mut listed = vec![false; self.lists.len()];
        for &list in &self.free {
            let ok = (list as usize) < self.lists.len()
                && !used[list as usize]
                && self.lists[list as usize].is_empty()
                && !std::mem::replace(&mut listed[list as usize], true);
            if !ok {
                return Err(format!(
                    "the free list names member array {list}, which is not a free one"
                ));
            }
        }
        let in_use = used.iter().filter(|&&u| u).count();
        if in_use + self.free.len() != self.lists.len() {
            return Err(format!(
                "{} member arrays, {in_use} in use and {} free",
                self.lists.len(),
                self.free.len()
            ));
        }
        Ok(())
    }

    /// The root of `x` if it is at most `steps` parents away.
    fn root_within(&self, mut x: Slot, steps: usize) -> Option<Slot> {
        for _ in 0..steps {
            let parent = self.nodes[x as usize].parent;
            if parent == x {
                return Some(x);
            }
            x = parent;
        }
        None
    }
}

/// What a checked forest holds: live sets (clusters) and removed slots (deleted rows).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Census {
    pub sets: usize,
    pub removed: usize,
}

/// Merges `incoming` (in order) into `members` (in order), keeping the order.
fn merge_into(members: &mut Vec<Slot>, incoming: &[Slot], older: &impl Fn(Slot, Slot) -> bool) {
    let last = *members.last().expect("a member array is never empty");
    if older(last, incoming[0]) {
        members.extend_from_slice(incoming);
        return;
    }
    let mut merged = Vec::with_capacity((members.len() + incoming.len()).next_power_of_two());
    let mut rest: &[Slot] = members;
    for &s in incoming {
        let at = rest.partition_point(|&m| older(m, s));
        merged.extend_from_slice(&rest[..at]);
        merged.push(s);
        rest = &rest[at..];
    }
    merged.extend_from_slice(rest);
    *members = merged;
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
        let m = f.members(x).to_vec();
        assert!(m.is_sorted(), "members in order: {m:?}");
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
        assert_eq!(f.size(0), 4);
        assert_eq!(sorted_members(&f, 3), vec![0, 1, 2, 3]);
    }

    #[test]
    fn members_stay_in_order_through_any_unions_and_isolations() {
        // Older is a lower slot here; unions in a scrambled order, of singletons and of sets.
        let mut f = forest(64);
        let older = |a: Slot, b: Slot| a < b;
        let mut x: u64 = 7;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (a, b) = ((x >> 33) % 64, (x >> 45) % 64);
            f.union(a as Slot, b as Slot, older);
            let members = f.members(a as Slot);
            assert!(members.windows(2).all(|w| w[0] < w[1]), "{members:?}");
            assert_eq!(f.primary(b as Slot), members[0]);
            assert_eq!(members.len(), f.size(a as Slot));
        }
        let whole: Vec<Slot> = f.members(0).to_vec();
        f.isolate(&whole);
        for &s in &whole {
            assert_eq!(f.members(s), [s]);
        }
        // Freed arrays are reused and stay in order.
        for s in (0..63).rev() {
            f.union(s, s + 1, older);
        }
        assert_eq!(f.members(5), (0..64).collect::<Vec<Slot>>());
    }

    #[test]
    fn union_of_one_set_with_itself_changes_nothing() {
        let mut f = forest(2);
        assert!(f.union(0, 1, |a, b| a < b));
        assert!(!f.union(1, 0, |a, b| a < b));
        assert_eq!(f.size(1), 2);
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
