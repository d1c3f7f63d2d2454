//! Graph algorithms on adjacency lists where `adj[v]` lists what `v` depends on.
//! All iterative: a 10 000-task chain must not overflow the stack.

use std::collections::{BTreeSet, VecDeque};

/// Topological order (dependencies first, ties in index order) and the level
/// of every node (0 without dependencies, else 1 + the highest level among
/// its dependencies). `None` when there is a cycle.
pub(crate) fn levels(deps: &[Vec<usize>]) -> Option<(Vec<usize>, Vec<usize>)> {
    let n = deps.len();
    let (mut indeg, succ) = in_degrees_and_successors(deps);
    let mut queue: VecDeque<usize> = (0..n).filter(|&v| indeg[v] == 0).collect();
    let mut order = Vec::with_capacity(n);
    let mut level = vec![0usize; n];
    while let Some(v) = queue.pop_front() {
        order.push(v);
        for &s in &succ[v] {
            level[s] = level[s].max(level[v] + 1);
            indeg[s] -= 1;
            if indeg[s] == 0 {
                queue.push_back(s);
            }
        }
    }
    (order.len() == n).then_some((order, level))
}

/// How many dependencies each node has, and which nodes depend on it.
fn in_degrees_and_successors(deps: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let indeg = deps.iter().map(Vec::len).collect();
    (indeg, successors(deps.iter().map(Vec::as_slice)))
}

/// Which nodes depend on each node, in index order: the one place the
/// successor lists of a graph are built.
pub(crate) fn successors<'a>(deps: impl ExactSizeIterator<Item = &'a [usize]>) -> Vec<Vec<usize>> {
    let mut succ = vec![Vec::new(); deps.len()];
    for (v, ds) in deps.enumerate() {
        for &d in ds {
            succ[d].push(v);
        }
    }
    succ
}

/// The longest chain of nodes (by count), first to last. Among equally long
/// chains the one ending at the lowest index, then through the lowest indices.
pub(crate) fn critical_path(deps: &[Vec<usize>], levels: &[usize]) -> Vec<usize> {
    let Some(max) = levels.iter().copied().max() else {
        return Vec::new();
    };
    let mut cur = levels.iter().position(|&l| l == max).expect("max exists");
    let mut path = vec![cur];
    while levels[cur] > 0 {
        cur = deps[cur]
            .iter()
            .copied()
            .filter(|&d| levels[d] + 1 == levels[cur])
            .min()
            .expect("a node above level 0 has a dependency one level below");
        path.push(cur);
    }
    path.reverse();
    path
}

/// Topological order: dependencies first, otherwise lowest index first.
/// Nodes on a cycle (invalid input) come last, in index order.
pub(crate) fn stable_topo(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let (mut indeg, succ) = in_degrees_and_successors(deps);
    let mut ready: BTreeSet<usize> = (0..n).filter(|&v| indeg[v] == 0).collect();
    let mut order = Vec::with_capacity(n);
    let mut done = vec![false; n];
    while let Some(v) = ready.pop_first() {
        order.push(v);
        done[v] = true;
        for &s in &succ[v] {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                ready.insert(s);
            }
        }
    }
    order.extend((0..n).filter(|&v| !done[v]));
    order
}

/// Strongly connected components that contain a cycle (more than one node,
/// or a node depending on itself), each sorted, ordered by lowest member.
pub(crate) fn cyclic_components(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = adj.len();
    let mut t = Tarjan {
        index: vec![Tarjan::UNSEEN; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        call: Vec::new(),
        next: 0,
    };
    let mut out = Vec::new();
    for root in 0..n {
        if t.index[root] != Tarjan::UNSEEN {
            continue;
        }
        t.open(root);
        while let Some(&(v, ei)) = t.call.last() {
            if ei < adj[v].len() {
                t.call.last_mut().expect("non-empty").1 += 1;
                let w = adj[v][ei];
                if t.index[w] == Tarjan::UNSEEN {
                    t.open(w);
                } else if t.on_stack[w] {
                    t.low[v] = t.low[v].min(t.index[w]);
                }
            } else {
                t.call.pop();
                if let Some(&(u, _)) = t.call.last() {
                    t.low[u] = t.low[u].min(t.low[v]);
                }
                if t.low[v] == t.index[v] {
                    let mut comp = Vec::new();
                    loop {
                        let w = t.stack.pop().expect("tarjan stack");
                        t.on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if comp.len() > 1 || adj[v].contains(&v) {
                        comp.sort_unstable();
                        out.push(comp);
                    }
                }
            }
        }
    }
    out.sort_by_key(|c| c[0]);
    out
}

/// Tarjan's search, iterative: `call` holds (node, next edge) in place of
/// the recursion, so long chains cannot overflow the stack.
struct Tarjan {
    index: Vec<usize>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    call: Vec<(usize, usize)>,
    next: usize,
}

impl Tarjan {
    const UNSEEN: usize = usize::MAX;

    /// Visit `v` for the first time.
    fn open(&mut self, v: usize) {
        self.index[v] = self.next;
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        self.call.push((v, 0));
    }
}

/// A shortest cycle through the lowest node of a cyclic component, as
/// `[a, b, ..., a]` where each node depends on the next.
pub(crate) fn cycle_through(adj: &[Vec<usize>], comp: &[usize]) -> Vec<usize> {
    let start = comp[0];
    let mut member = vec![false; adj.len()];
    for &v in comp {
        member[v] = true;
    }
    let mut parent = vec![usize::MAX; adj.len()];
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        let mut succ: Vec<usize> = adj[v].iter().copied().filter(|&w| member[w]).collect();
        succ.sort_unstable();
        for w in succ {
            if w == start {
                let mut path = vec![start];
                let mut cur = v;
                while cur != start {
                    path.push(cur);
                    cur = parent[cur];
                }
                path.push(start);
                // path is start, v, parent(v), ... — reverse the middle
                let end = path.len() - 1;
                path[1..end].reverse();
                return path;
            }
            if parent[w] == usize::MAX && w != start {
                parent[w] = v;
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_critical_path_of_a_diamond_with_a_tail() {
        // 0 <- 1, 0 <- 2, {1,2} <- 3, 3 <- 4; 5 alone
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2], vec![3], vec![]];
        let (order, lv) = levels(&deps).unwrap();
        assert_eq!(lv, vec![0, 1, 1, 2, 3, 0]);
        assert_eq!(order.len(), 6);
        assert_eq!(critical_path(&deps, &lv), vec![0, 1, 3, 4]);
    }

    #[test]
    fn critical_path_of_no_deps_is_one_task() {
        let deps = vec![vec![], vec![]];
        let (_, lv) = levels(&deps).unwrap();
        assert_eq!(critical_path(&deps, &lv), vec![0]);
        assert!(critical_path(&[], &[]).is_empty());
    }

    #[test]
    fn levels_detect_cycles() {
        assert!(levels(&[vec![1], vec![0]]).is_none());
        assert!(levels(&[vec![0]]).is_none());
    }

    #[test]
    fn components_and_cycle_paths() {
        // 0 -> 1 -> 2 -> 0 (cycle), 3 -> 3 (self), 4 -> 0 (hangs off the cycle)
        let adj = vec![vec![1], vec![2], vec![0], vec![3], vec![0]];
        let comps = cyclic_components(&adj);
        assert_eq!(comps, vec![vec![0, 1, 2], vec![3]]);
        assert_eq!(cycle_through(&adj, &comps[0]), vec![0, 1, 2, 0]);
        assert_eq!(cycle_through(&adj, &comps[1]), vec![3, 3]);
    }

    #[test]
    fn shortest_cycle_is_chosen() {
        // 0 -> 1 -> 0 and 0 -> 2 -> 3 -> 0
        let adj = vec![vec![2, 1], vec![0], vec![3], vec![0]];
        let comps = cyclic_components(&adj);
        assert_eq!(cycle_through(&adj, &comps[0]), vec![0, 1, 0]);
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 200_000;
        let deps: Vec<Vec<usize>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        assert!(cyclic_components(&deps).is_empty());
        let (_, lv) = levels(&deps).unwrap();
        assert_eq!(critical_path(&deps, &lv).len(), n);
    }

    #[test]
    fn stable_topo_prefers_plan_order() {
        // 0 depends on 2; 1 free; 2 free
        assert_eq!(stable_topo(&[vec![2], vec![], vec![]]), vec![1, 2, 0]);
    }
}
