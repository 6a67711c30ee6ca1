//! Check dependencies (`check_dependencies (check_id, depends_on)`) as a graph: which rows are
//! refused when loaded (a check depending on itself, on a check that does not exist, or rows
//! that form a cycle), and which checks a parent's message lists as "also affected".
//!
//! The rules themselves live in [`super::due`]: while a check it depends on is offline, a
//! check's notifications are held; every check in the graph gives its offline notice
//! [`GRACE_MS`] (a child to see whether a parent goes down too, a parent to gather the
//! children that fall with it), so a parent and its children down together make one message.
//!
//! # Decisions
//! - A cycle refuses every row between the checks of the cycle (a strongly connected set), not
//!   one chosen row: which row is wrong is the admin's call. The rest of the table still loads.
//! - The parent lists its offline descendants reached through offline checks (a grandchild
//!   behind an offline child is held by that child, so it is listed too).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// How long an offline notice of a check in the graph waits before it is sent.
pub const GRACE_MS: i64 = 10_000;

/// A `check_dependencies` row that was refused, described for the admin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// `check_id = depends_on`.
    SelfLoop(i64),
    /// The row names a check that does not exist.
    Unknown { check: i64, depends_on: i64 },
    /// These checks depend on each other in a cycle (every row among them is refused).
    Cycle(Vec<i64>),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::SelfLoop(c) => write!(
                f,
                "check_dependencies row ({c}, {c}): check {c} cannot depend on itself; the row is ignored"
            ),
            Problem::Unknown { check, depends_on } => write!(
                f,
                "check_dependencies row ({check}, {depends_on}) names a check that does not exist; \
                 the row is ignored"
            ),
            Problem::Cycle(ids) => {
                let list: Vec<String> = ids.iter().map(i64::to_string).collect();
                write!(
                    f,
                    "check_dependencies rows among checks {} form a cycle; those rows are ignored \
                     (delete one to break it)",
                    list.join(", ")
                )
            }
        }
    }
}

/// The accepted rows: a graph without cycles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    parents: BTreeMap<i64, BTreeSet<i64>>,
    children: BTreeMap<i64, BTreeSet<i64>>,
}

/// Checks reachable from `from` along `edges` (not `from` itself unless on a cycle).
fn reachable(edges: &BTreeMap<i64, BTreeSet<i64>>, from: i64) -> BTreeSet<i64> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(c) = stack.pop() {
        for &n in edges.get(&c).into_iter().flatten() {
            if seen.insert(n) {
                stack.push(n);
            }
        }
    }
    seen
}

impl Graph {
    /// Builds the graph from `rows` (check_id, depends_on); `known` are the existing checks.
    /// Refused rows come back as problems, sorted and without repeats.
    pub fn build(rows: &[(i64, i64)], known: &HashSet<i64>) -> (Graph, Vec<Problem>) {
        let mut problems = BTreeSet::new();
        let mut up: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for &(check, depends_on) in rows {
            if check == depends_on {
                problems.insert(Problem::SelfLoop(check));
            } else if !known.contains(&check) || !known.contains(&depends_on) {
                problems.insert(Problem::Unknown { check, depends_on });
            } else {
                up.entry(check).or_default().insert(depends_on);
            }
        }
        // A row a -> b is on a cycle when b reaches a; the checks that reach each other form
        // one cycle (strongly connected set).
        let reach: BTreeMap<i64, BTreeSet<i64>> =
            up.keys().map(|&c| (c, reachable(&up, c))).collect();
        let on_cycle = |a: i64, b: i64| reach.get(&b).is_some_and(|r| r.contains(&a));
        let mut graph = Graph::default();
        for (&a, ps) in &up {
            for &b in ps {
                if on_cycle(a, b) {
                    let mut set: Vec<i64> = reach[&a]
                        .iter()
                        .copied()
                        .filter(|&x| x == a || reach.get(&x).is_some_and(|r| r.contains(&a)))
                        .collect();
                    set.sort_unstable();
                    problems.insert(Problem::Cycle(set));
                } else {
                    graph.parents.entry(a).or_default().insert(b);
                    graph.children.entry(b).or_default().insert(a);
                }
            }
        }
        (graph, problems.into_iter().collect())
    }

    /// Whether `check` has a row (as a child or as a parent).
    pub fn contains(&self, check: i64) -> bool {
        self.parents.contains_key(&check) || self.children.contains_key(&check)
    }

    /// Whether a check `check` depends on is offline.
    pub fn parent_offline(&self, check: i64, offline: &dyn Fn(i64) -> bool) -> bool {
        self.parents
            .get(&check)
            .is_some_and(|ps| ps.iter().any(|&p| offline(p)))
    }

    /// The offline checks that depend on `check`, directly or through offline checks, in id
    /// order: the ones its message lists as "also affected".
    pub fn affected(&self, check: i64, offline: &dyn Fn(i64) -> bool) -> Vec<i64> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![check];
        while let Some(c) = stack.pop() {
            for &n in self.children.get(&c).into_iter().flatten() {
                if offline(n) && seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        seen.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(ids: &[i64]) -> HashSet<i64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_tree_loads_and_lists_offline_descendants() {
        let (g, p) = Graph::build(&[(2, 1), (3, 1), (4, 1), (5, 2)], &known(&[1, 2, 3, 4, 5]));
        assert!(p.is_empty());
        assert!(g.contains(1) && g.contains(5) && !g.contains(6));
        let all = |_: i64| true;
        assert_eq!(g.affected(1, &all), vec![2, 3, 4, 5]);
        // 5 is behind 2: listed only while 2 is offline too.
        let not_two = |c: i64| c != 2;
        assert_eq!(g.affected(1, &not_two), vec![3, 4]);
        assert!(g.parent_offline(5, &all));
        assert!(!g.parent_offline(5, &not_two));
        assert!(!g.parent_offline(1, &all));
    }

    #[test]
    fn self_loops_and_unknown_ids_are_refused_and_the_rest_loads() {
        let (g, p) = Graph::build(&[(1, 1), (2, 9), (3, 1), (3, 1)], &known(&[1, 2, 3]));
        assert_eq!(
            p,
            vec![
                Problem::SelfLoop(1),
                Problem::Unknown {
                    check: 2,
                    depends_on: 9
                }
            ]
        );
        assert!(g.parent_offline(3, &|c| c == 1));
        assert!(!g.contains(2));
        assert!(p[0].to_string().contains("cannot depend on itself"));
    }

    #[test]
    fn a_cycle_is_refused_once_with_its_members_and_the_rest_loads() {
        let rows = [(1, 2), (2, 3), (3, 1), (4, 1), (5, 6)];
        let (g, p) = Graph::build(&rows, &known(&[1, 2, 3, 4, 5, 6]));
        assert_eq!(p, vec![Problem::Cycle(vec![1, 2, 3])]);
        assert!(p[0].to_string().contains("checks 1, 2, 3 form a cycle"));
        // Rows out of the cycle still load, the cycle's rows do not.
        assert!(g.parent_offline(4, &|c| c == 1));
        assert!(g.parent_offline(5, &|c| c == 6));
        assert!(!g.parent_offline(1, &|_| true));
        assert!(!g.parent_offline(3, &|_| true));
    }
}
