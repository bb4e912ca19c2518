//! The dependency graph of a configuration: stack → builder ← store, builder → image ←
//! source. Work flows along the edges: an upstream's dependents are what its change (or
//! its failure) reaches, and the topological order is the order apply may run in.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt::{self, Write as _};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef};
use petgraph::Direction;

use crate::model::{BuilderKind, Config, Source};

/// What a node of the graph stands for. The order is the order of dependencies: stacks
/// and stores before builders, builders and sources before images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKind {
    Stack,
    Store,
    Builder,
    Source,
    Image,
}

impl NodeKind {
    fn as_str(self) -> &'static str {
        match self {
            NodeKind::Stack => "stack",
            NodeKind::Store => "store",
            NodeKind::Builder => "builder",
            NodeKind::Source => "source",
            NodeKind::Image => "image",
        }
    }
}

/// A stack, store, builder, source or image, by name (a source by its
/// [`Source::identity`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    pub kind: NodeKind,
    pub name: String,
}

impl Node {
    pub fn new(kind: NodeKind, name: impl Into<String>) -> Node {
        Node {
            kind,
            name: name.into(),
        }
    }

    /// The node of an image's source, named by its identity.
    pub fn source(source: &Source) -> Node {
        Node::new(NodeKind::Source, source.identity())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`", self.kind.as_str(), self.name)
    }
}

/// A dependency cycle, first node repeated at the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle: {}", .0.iter().map(Node::to_string).collect::<Vec<_>>().join(" → "))]
pub struct Cycle(pub Vec<Node>);

/// The dependency DAG of a configuration; edges point from what is depended on to what
/// depends on it.
#[derive(Debug, Clone)]
pub struct Graph {
    dag: DiGraph<Node, ()>,
    index: HashMap<Node, NodeIndex>,
}

impl Graph {
    pub fn build(config: &Config) -> Graph {
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        nodes.extend(config.stacks.keys().map(|n| Node::new(NodeKind::Stack, n)));
        nodes.extend(config.stores.keys().map(|n| Node::new(NodeKind::Store, n)));
        for (name, builder) in &config.builders {
            let node = Node::new(NodeKind::Builder, name);
            if let BuilderKind::Assembled { stack, store, .. } = &builder.kind {
                edges.push((Node::new(NodeKind::Stack, stack), node.clone()));
                edges.push((Node::new(NodeKind::Store, store), node.clone()));
            }
            nodes.push(node);
        }
        for (name, image) in &config.images {
            let node = Node::new(NodeKind::Image, name);
            let source = Node::source(&image.source);
            edges.push((Node::new(NodeKind::Builder, &image.builder), node.clone()));
            edges.push((source.clone(), node.clone()));
            nodes.push(source);
            nodes.push(node);
        }
        Graph::from_parts(nodes, edges)
    }

    /// A graph of these nodes (duplicates merged) and edges (whose ends are added as
    /// nodes when missing).
    fn from_parts(nodes: Vec<Node>, edges: Vec<(Node, Node)>) -> Graph {
        let mut graph = Graph {
            dag: DiGraph::new(),
            index: HashMap::new(),
        };
        let all: BTreeSet<Node> = nodes
            .into_iter()
            .chain(edges.iter().flat_map(|(a, b)| [a.clone(), b.clone()]))
            .collect();
        for node in all {
            let i = graph.dag.add_node(node.clone());
            graph.index.insert(node, i);
        }
        let edges: BTreeSet<(Node, Node)> = edges.into_iter().collect();
        for (from, to) in edges {
            graph.dag.add_edge(graph.index[&from], graph.index[&to], ());
        }
        graph
    }

    /// Every node, ordered by kind and name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.dag.node_weights()
    }

    /// Dependencies before their dependents; among nodes free to go, by kind and name,
    /// so the order is stable.
    pub fn topological_order(&self) -> Result<Vec<&Node>, Cycle> {
        let mut incoming: Vec<usize> = self
            .dag
            .node_indices()
            .map(|i| self.dag.edges_directed(i, Direction::Incoming).count())
            .collect();
        let mut ready: BinaryHeap<Reverse<(&Node, NodeIndex)>> = self
            .dag
            .node_indices()
            .filter(|i| incoming[i.index()] == 0)
            .map(|i| Reverse((&self.dag[i], i)))
            .collect();
        let mut order = Vec::with_capacity(self.dag.node_count());
        while let Some(Reverse((node, i))) = ready.pop() {
            order.push(node);
            for edge in self.dag.edges_directed(i, Direction::Outgoing) {
                let next = edge.target();
                incoming[next.index()] -= 1;
                if incoming[next.index()] == 0 {
                    ready.push(Reverse((&self.dag[next], next)));
                }
            }
        }
        if order.len() == self.dag.node_count() {
            return Ok(order);
        }
        Err(self.cycle_among(|i| incoming[i.index()] > 0))
    }

    /// A cycle through the nodes Kahn's algorithm could not order: each of them has a
    /// predecessor among them, so walking predecessors must come back to a node seen.
    fn cycle_among(&self, left: impl Fn(NodeIndex) -> bool) -> Cycle {
        let start = self
            .dag
            .node_indices()
            .find(|&i| left(i))
            .expect("a graph that cannot be ordered has unordered nodes");
        let mut walk = vec![start];
        let mut current = start;
        loop {
            current = self
                .dag
                .neighbors_directed(current, Direction::Incoming)
                .filter(|&p| left(p))
                .min()
                .expect("every unordered node has an unordered predecessor");
            if let Some(pos) = walk.iter().position(|&i| i == current) {
                let mut cycle: Vec<Node> = walk[pos..]
                    .iter()
                    .rev()
                    .map(|&i| self.dag[i].clone())
                    .collect();
                // Start at the least node, so a cycle is always named the same way.
                let least = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap_or(0);
                cycle.rotate_left(least);
                cycle.push(cycle[0].clone());
                return Cycle(cycle);
            }
            walk.push(current);
        }
    }

    /// Everything that depends on `node`, directly or not, by kind and name: what a
    /// change to it can reach, and what its failure blocks.
    pub fn dependents(&self, node: &Node) -> Vec<&Node> {
        let Some(&start) = self.index.get(node) else {
            return Vec::new();
        };
        let mut dfs = Dfs::new(&self.dag, start);
        let mut reached = BTreeSet::new();
        while let Some(i) = dfs.next(&self.dag) {
            if i != start {
                reached.insert(&self.dag[i]);
            }
        }
        reached.into_iter().collect()
    }

    /// The graph in Graphviz DOT, one cluster per kind, in a stable order.
    pub fn to_dot(&self) -> String {
        let mut dot =
            String::from("digraph kpackd {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
        let clusters = [
            (NodeKind::Stack, "stacks", "box3d"),
            (NodeKind::Store, "stores", "folder"),
            (NodeKind::Builder, "builders", "component"),
            (NodeKind::Source, "sources", "note"),
            (NodeKind::Image, "images", "box"),
        ];
        for (kind, title, shape) in clusters {
            let mut members: Vec<&Node> = self.nodes().filter(|n| n.kind == kind).collect();
            if members.is_empty() {
                continue;
            }
            members.sort();
            let _ = writeln!(dot, "  subgraph cluster_{title} {{");
            let _ = writeln!(
                dot,
                "    label=\"{title}\";\n    style=rounded;\n    color=gray;"
            );
            for node in members {
                let _ = writeln!(
                    dot,
                    "    {} [label={}, shape={shape}];",
                    dot_id(node),
                    quote(&node.name)
                );
            }
            dot.push_str("  }\n");
        }
        let mut edges: Vec<(&Node, &Node)> = self
            .dag
            .edge_references()
            .map(|e| (&self.dag[e.source()], &self.dag[e.target()]))
            .collect();
        edges.sort();
        for (from, to) in edges {
            let _ = writeln!(dot, "  {} -> {};", dot_id(from), dot_id(to));
        }
        dot.push_str("}\n");
        dot
    }
}

fn dot_id(node: &Node) -> String {
    quote(&format!("{}:{}", node.kind.as_str(), node.name))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(kind: NodeKind, name: &str) -> Node {
        Node::new(kind, name)
    }

    #[test]
    fn orders_dependencies_first_and_stably() {
        let graph = Graph::from_parts(
            vec![n(NodeKind::Stack, "lonely")],
            vec![
                (n(NodeKind::Builder, "b"), n(NodeKind::Image, "z")),
                (n(NodeKind::Builder, "b"), n(NodeKind::Image, "a")),
                (n(NodeKind::Stack, "s"), n(NodeKind::Builder, "b")),
                (n(NodeKind::Store, "t"), n(NodeKind::Builder, "b")),
                (n(NodeKind::Source, "src"), n(NodeKind::Image, "a")),
            ],
        );
        let order: Vec<String> = graph
            .topological_order()
            .expect("acyclic")
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            order,
            [
                "stack `lonely`",
                "stack `s`",
                "store `t`",
                "builder `b`",
                "source `src`",
                "image `a`",
                "image `z`"
            ]
        );
        let reached: Vec<String> = graph
            .dependents(&n(NodeKind::Stack, "s"))
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(reached, ["builder `b`", "image `a`", "image `z`"]);
    }

    #[test]
    fn names_a_cycle() {
        let graph = Graph::from_parts(
            vec![],
            vec![
                (n(NodeKind::Stack, "s"), n(NodeKind::Builder, "b")),
                (n(NodeKind::Builder, "b"), n(NodeKind::Image, "i")),
                (n(NodeKind::Image, "i"), n(NodeKind::Builder, "b")),
            ],
        );
        let cycle = graph.topological_order().expect_err("a cycle");
        assert_eq!(
            cycle.to_string(),
            "dependency cycle: builder `b` → image `i` → builder `b`"
        );
    }

    #[test]
    fn dot_quotes_names() {
        let graph = Graph::from_parts(vec![n(NodeKind::Source, "say \"hi\"")], vec![]);
        assert_eq!(
            graph.to_dot(),
            "digraph kpackd {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n  subgraph cluster_sources {\n    label=\"sources\";\n    style=rounded;\n    color=gray;\n    \"source:say \\\"hi\\\"\" [label=\"say \\\"hi\\\"\", shape=note];\n  }\n}\n"
        );
    }
}
