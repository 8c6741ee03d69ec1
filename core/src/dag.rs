//! The dependency graph of a project: nodes by unique id, edges from parents to children.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A directed graph over node ids, with deterministic (sorted) iteration everywhere.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    parents: BTreeMap<String, BTreeSet<String>>,
    children: BTreeMap<String, BTreeSet<String>>,
}

impl Dag {
    /// Adds a node without edges (no effect when it exists).
    pub fn add_node(&mut self, id: &str) {
        // Look up before inserting: `entry` would allocate the key even for known nodes.
        if !self.parents.contains_key(id) {
            self.parents.insert(id.to_string(), BTreeSet::new());
            self.children.insert(id.to_string(), BTreeSet::new());
        }
    }

    /// Adds an edge: `child` depends on `parent`. Both nodes are added when missing.
    pub fn add_edge(&mut self, parent: &str, child: &str) {
        self.add_node(parent);
        self.add_node(child);
        if let Some(parents) = self.parents.get_mut(child)
            && !parents.contains(parent)
        {
            parents.insert(parent.to_string());
        }
        if let Some(children) = self.children.get_mut(parent)
            && !children.contains(child)
        {
            children.insert(child.to_string());
        }
    }

    /// Returns the ids of every node, sorted.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.parents.keys().map(String::as_str)
    }

    /// Returns true when the node exists.
    pub fn contains(&self, id: &str) -> bool {
        self.parents.contains_key(id)
    }

    /// Returns the direct parents of a node.
    pub fn parents(&self, id: &str) -> impl Iterator<Item = &str> {
        self.parents
            .get(id)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Returns the direct children of a node.
    pub fn children(&self, id: &str) -> impl Iterator<Item = &str> {
        self.children
            .get(id)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Returns one cycle as a path `a, b, …, a` when the graph has any.
    pub fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Unvisited,
            OnStack,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> =
            self.nodes().map(|id| (id, Mark::Unvisited)).collect();
        for start in self.nodes() {
            if marks[start] != Mark::Unvisited {
                continue;
            }
            // Iterative depth-first search, so deep graphs cannot overflow the stack.
            let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, self.children(start).collect())];
            marks.insert(start, Mark::OnStack);
            while let Some((node, pending)) = stack.last_mut() {
                let node = *node;
                match pending.pop() {
                    Some(child) => match marks[child] {
                        Mark::OnStack => {
                            let from = stack.iter().position(|(id, _)| *id == child).unwrap_or(0);
                            let mut cycle: Vec<String> = stack[from..]
                                .iter()
                                .map(|(id, _)| (*id).to_string())
                                .collect();
                            cycle.push(child.to_string());
                            return Some(cycle);
                        }
                        Mark::Unvisited => {
                            marks.insert(child, Mark::OnStack);
                            stack.push((child, self.children(child).collect()));
                        }
                        Mark::Done => {}
                    },
                    None => {
                        marks.insert(node, Mark::Done);
                        stack.pop();
                    }
                }
            }
        }
        None
    }

    /// Returns every node with its parents before it; ties are broken by id, so the order is
    /// deterministic. Nodes on a cycle are left out.
    pub fn topological_order(&self) -> Vec<String> {
        let mut remaining: BTreeMap<&str, usize> = self
            .parents
            .iter()
            .map(|(id, parents)| (id.as_str(), parents.len()))
            .collect();
        let mut ready: BTreeSet<&str> = remaining
            .iter()
            .filter(|(_, count)| **count == 0)
            .map(|(id, _)| *id)
            .collect();
        let mut order = Vec::with_capacity(remaining.len());
        while let Some(id) = ready.pop_first() {
            order.push(id.to_string());
            for child in self.children(id) {
                if let Some(count) = remaining.get_mut(child) {
                    *count -= 1;
                    if *count == 0 {
                        ready.insert(child);
                    }
                }
            }
        }
        order
    }

    /// Returns the ancestors of `id` up to `depth` edges away (`None`: all), without `id`.
    pub fn ancestors(&self, id: &str, depth: Option<usize>) -> BTreeSet<String> {
        self.walk(id, depth, |graph, node| graph.parents(node).collect())
    }

    /// Returns the descendants of `id` up to `depth` edges away (`None`: all), without `id`.
    pub fn descendants(&self, id: &str, depth: Option<usize>) -> BTreeSet<String> {
        self.walk(id, depth, |graph, node| graph.children(node).collect())
    }

    fn walk<'a>(
        &'a self,
        id: &str,
        depth: Option<usize>,
        next: impl Fn(&'a Dag, &str) -> Vec<&'a str>,
    ) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([(id.to_string(), 0usize)]);
        while let Some((node, distance)) = queue.pop_front() {
            if depth.is_some_and(|limit| distance >= limit) {
                continue;
            }
            for neighbour in next(self, &node) {
                if neighbour != id && seen.insert(neighbour.to_string()) {
                    queue.push_back((neighbour.to_string(), distance + 1));
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Dag {
        let mut dag = Dag::default();
        dag.add_edge("a", "b");
        dag.add_edge("b", "c");
        dag.add_edge("a", "d");
        dag.add_edge("d", "c");
        dag.add_node("lonely");
        dag
    }

    #[test]
    fn topological_order_puts_parents_first_deterministically() {
        assert_eq!(
            chain().topological_order(),
            vec!["a", "b", "d", "c", "lonely"]
        );
    }

    #[test]
    fn walks_respect_depth() {
        let dag = chain();
        assert_eq!(
            dag.ancestors("c", None),
            BTreeSet::from(["a".into(), "b".into(), "d".into()])
        );
        assert_eq!(
            dag.ancestors("c", Some(1)),
            BTreeSet::from(["b".into(), "d".into()])
        );
        assert_eq!(
            dag.descendants("a", Some(1)),
            BTreeSet::from(["b".into(), "d".into()])
        );
    }

    #[test]
    fn cycles_are_found_as_paths() {
        let mut dag = chain();
        assert_eq!(dag.find_cycle(), None);
        dag.add_edge("c", "a");
        let cycle = dag.find_cycle().unwrap();
        assert_eq!(cycle.first(), cycle.last());
        assert!(cycle.len() >= 3, "{cycle:?}");
        assert!(dag.topological_order().len() < 5);
    }

    #[test]
    fn deep_graphs_do_not_overflow() {
        let mut dag = Dag::default();
        for i in 0..100_000 {
            dag.add_edge(&format!("n{i}"), &format!("n{}", i + 1));
        }
        assert_eq!(dag.find_cycle(), None);
        assert_eq!(dag.topological_order().len(), 100_001);
    }
}
