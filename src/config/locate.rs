//! Source positions of keys and values. Walks the YAML text with the
//! position-aware event parser serde-saphyr itself uses (granit-parser) and
//! records, for every node, its key path (`upstreams[1].discovery.static[0]`)
//! and 1-based line/column. Used to put a path on serde-saphyr's errors (they
//! carry a position but no path) and a position on semantic errors (they
//! carry a path but no position). It rejects nothing: on a syntax error it
//! keeps what it saw so far and serde-saphyr reports the error itself.
//!
//! It also records each node's extent (character offsets, and its last
//! descendant) so `prune` can blank an entry out of the text while every
//! other node keeps its position.

use std::ops::Range;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// Positions of the nodes of the first YAML document of a text.
#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    /// In document order.
    nodes: Vec<Node>,
    /// Scalar values (not keys), for `${VAR}` expansion.
    pub(crate) scalars: Vec<ValueScalar>,
}

#[derive(Debug)]
struct Node {
    path: String,
    position: Position,
    role: Role,
    shape: Shape,
    /// Character offset where the node's text starts.
    start: usize,
    /// Character offset just past its text, descendants included (for a key,
    /// just past the key).
    end: usize,
    /// Index in `SourceMap::nodes` of its last descendant (its own when it
    /// has none).
    last: usize,
}

/// How a node is written, as far as removing its children is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A scalar or an alias.
    Scalar,
    /// A `{ ... }` or `[ ... ]` collection: still valid once emptied.
    Flow,
    /// A block mapping; it starts where its first key does.
    BlockMapping,
    /// A block sequence; it starts at its first `-`.
    BlockSequence,
}

/// A node of the map, by index in document order.
pub(crate) type NodeId = usize;

/// The nodes a mapping entry or a sequence item is made of: a contiguous
/// run of node ids, and the characters of the text it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) first: NodeId,
    pub(crate) last: NodeId,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// An item of a sequence (else an entry of a mapping).
    pub(crate) item: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The key of a mapping entry; `path` is the path of its value.
    Key,
    /// A value (scalar, sequence or mapping).
    Value,
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// A scalar in value position, as written (before expansion).
#[derive(Debug)]
pub(crate) struct ValueScalar {
    pub(crate) node: NodeId,
    pub(crate) path: String,
    pub(crate) position: Position,
    pub(crate) value: String,
    pub(crate) style: ScalarStyle,
}

/// An open collection; `node` is its own node (or, for a complex key, the
/// key's).
enum Frame {
    /// `key` is `None` while the next node is a key.
    Map {
        path: String,
        key: Option<String>,
        node: NodeId,
    },
    Seq {
        path: String,
        next: usize,
        node: NodeId,
    },
}

enum Slot {
    /// The next node is a key of the mapping at this path.
    Key(String),
    /// The next node is a value at this path.
    Value(String),
}

impl SourceMap {
    pub(crate) fn build(text: &str) -> SourceMap {
        let mut map = SourceMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Just past the last character any event so far covered.
        let mut text_end = 0;
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let position = Position {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            let extent = span.start.index()..span.end.index();
            if !extent.is_empty() {
                text_end = text_end.max(extent.end);
            }
            match event {
                Event::Scalar(value, style, ..) => match next_slot(&mut stack) {
                    Slot::Key(map_path) => {
                        map.push_key(&mut stack, &map_path, &value, position, extent);
                    }
                    Slot::Value(path) => {
                        map.push(path.clone(), position, Role::Value, Shape::Scalar, extent);
                        map.scalars.push(ValueScalar {
                            node: map.nodes.len() - 1,
                            path,
                            position,
                            value: value.into_owned(),
                            style,
                        });
                    }
                },
                Event::Alias(_) => match next_slot(&mut stack) {
                    Slot::Key(map_path) => {
                        map.push_key(&mut stack, &map_path, "*", position, extent);
                    }
                    Slot::Value(path) => {
                        map.push(path, position, Role::Value, Shape::Scalar, extent);
                    }
                },
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let mapping = matches!(event, Event::MappingStart(..));
                    // Block collections have an empty span; flow ones cover
                    // their opening bracket.
                    let shape = match (extent.is_empty(), mapping) {
                        (false, _) => Shape::Flow,
                        (true, true) => Shape::BlockMapping,
                        (true, false) => Shape::BlockSequence,
                    };
                    let path = match next_slot(&mut stack) {
                        // A complex key (a mapping or sequence used as a key).
                        Slot::Key(map_path) => {
                            map.push_key(&mut stack, &map_path, "?", position, extent);
                            join(&map_path, "?")
                        }
                        Slot::Value(path) => {
                            map.push(path.clone(), position, Role::Value, shape, extent);
                            path
                        }
                    };
                    let node = map.nodes.len() - 1;
                    stack.push(if mapping {
                        Frame::Map {
                            path,
                            key: None,
                            node,
                        }
                    } else {
                        Frame::Seq {
                            path,
                            next: 0,
                            node,
                        }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::Map { node, .. } | Frame::Seq { node, .. }) = stack.pop() {
                        let last = map.nodes.len() - 1;
                        map.nodes[node].last = last;
                        map.nodes[node].end = text_end;
                    }
                }
                // Only the first document is configuration.
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        map
    }

    fn push(
        &mut self,
        path: String,
        position: Position,
        role: Role,
        shape: Shape,
        extent: Range<usize>,
    ) {
        self.nodes.push(Node {
            path,
            position,
            role,
            shape,
            start: extent.start,
            end: extent.end,
            last: self.nodes.len(),
        });
    }

    /// Records a key and makes its mapping expect the value.
    fn push_key(
        &mut self,
        stack: &mut [Frame],
        map_path: &str,
        key: &str,
        position: Position,
        extent: Range<usize>,
    ) {
        if let Some(Frame::Map { key: slot, .. }) = stack.last_mut() {
            *slot = Some(key.to_owned());
        }
        self.push(
            join(map_path, key),
            position,
            Role::Key,
            Shape::Scalar,
            extent,
        );
    }

    /// Where to point for a problem with the node at `path`: its value, else
    /// its key; when the node is absent (a defaulted key), the key of the
    /// nearest ancestor that is present.
    pub(crate) fn position_of(&self, path: &str) -> Position {
        let find = |path: &str, role: Role| {
            self.nodes
                .iter()
                .find(|node| node.path == path && node.role == role)
                .map(|node| node.position)
        };
        if let Some(position) = find(path, Role::Value).or_else(|| find(path, Role::Key)) {
            return position;
        }
        let mut path = path;
        while let Some(parent) = parent(path) {
            if let Some(position) = find(parent, Role::Key).or_else(|| find(parent, Role::Value)) {
                return position;
            }
            path = parent;
        }
        Position { line: 1, column: 1 }
    }

    /// Where the key of `path` is written, when it is.
    pub(crate) fn key_position(&self, path: &str) -> Option<Position> {
        (self.nodes.iter())
            .find(|node| node.path == path && node.role == Role::Key)
            .map(|node| node.position)
    }

    /// The node at `position`; between nodes, the last node before it.
    /// Several nodes can start at one position (a block mapping starts at
    /// its first key): the innermost wins.
    pub(crate) fn node_at(&self, position: Position) -> Option<NodeId> {
        (self
            .nodes
            .iter()
            .rposition(|node| node.position == position))
        .or_else(|| self.nodes.iter().rposition(|node| node.position < position))
    }

    /// The mapping or sequence that holds `id` (for a value, the collection
    /// its key is in).
    pub(crate) fn container_of(&self, id: NodeId) -> Option<NodeId> {
        (0..id).rev().find(|&at| {
            let node = &self.nodes[at];
            node.role == Role::Value && node.last >= id
        })
    }

    /// The mapping entry (key and value) or sequence item `id` is part of,
    /// itself included; `None` for the document itself and for nodes inside
    /// complex keys.
    pub(crate) fn entry(&self, id: NodeId) -> Option<Entry> {
        let node = &self.nodes[id];
        let same_path = |other: NodeId| self.nodes.get(other).is_some_and(|n| n.path == node.path);
        let (key, value) = match node.role {
            Role::Key if same_path(id + 1) => (Some(id), id + 1),
            Role::Key => return None,
            Role::Value if id > 0 && same_path(id - 1) => (Some(id - 1), id),
            Role::Value if node.path.ends_with(']') => (None, id),
            Role::Value => return None,
        };
        let first = key.unwrap_or(value);
        Some(Entry {
            first,
            last: self.nodes[value].last,
            start: self.nodes[first].start,
            end: self.nodes[first].end.max(self.nodes[value].end),
            item: key.is_none(),
        })
    }

    /// The direct children of the collection `id`: for a mapping its keys
    /// and values, for a sequence its items.
    pub(crate) fn children(&self, id: NodeId) -> Vec<NodeId> {
        let mut children = Vec::new();
        let mut next = id + 1;
        while next <= self.nodes[id].last {
            children.push(next);
            next = self.nodes[next].last + 1;
        }
        children
    }

    pub(crate) fn shape(&self, id: NodeId) -> Shape {
        self.nodes[id].shape
    }

    /// Character offset where the node starts.
    pub(crate) fn start(&self, id: NodeId) -> usize {
        self.nodes[id].start
    }

    pub(crate) fn path(&self, id: NodeId) -> &str {
        &self.nodes[id].path
    }

    /// Whether `id` is a key (else a value).
    pub(crate) fn is_key(&self, id: NodeId) -> bool {
        self.nodes[id].role == Role::Key
    }
}

fn next_slot(stack: &mut [Frame]) -> Slot {
    match stack.last_mut() {
        None => Slot::Value(String::new()),
        Some(Frame::Seq { path, next, .. }) => {
            let slot = Slot::Value(format!("{path}[{next}]"));
            *next += 1;
            slot
        }
        Some(Frame::Map { path, key, .. }) => match key.take() {
            None => Slot::Key(path.clone()),
            Some(key) => Slot::Value(join(path, &key)),
        },
    }
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `a.b[2]` → `a.b` → `a` → `` → none.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    Some(path.rfind(['.', '[']).map_or("", |at| &path[..at]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
service:
  name: web
upstreams:
  - name: api
    discovery: { static: [127.0.0.1:1, 127.0.0.1:2] }
";

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    fn path_at(map: &SourceMap, position: Position) -> &str {
        map.path(map.node_at(position).expect("a node"))
    }

    #[test]
    fn values_and_keys_have_paths() {
        let map = SourceMap::build(TEXT);
        assert_eq!(map.position_of("service.name"), at(2, 9));
        assert_eq!(
            map.position_of("upstreams[0].discovery.static[1]"),
            at(5, 40)
        );
        assert_eq!(path_at(&map, at(5, 20)), "upstreams[0].discovery.static");
        assert_eq!(path_at(&map, at(4, 5)), "upstreams[0].name");
        let key = map.node_at(at(5, 5)).expect("a node");
        assert!(map.is_key(key));
        assert_eq!(
            map.path(map.container_of(key).expect("held")),
            "upstreams[0]"
        );
    }

    #[test]
    fn entries_cover_key_value_and_descendants() {
        let map = SourceMap::build(TEXT);
        let text: Vec<char> = TEXT.chars().collect();
        let covered = |entry: Entry| text[entry.start..entry.end].iter().collect::<String>();
        let name = map.node_at(at(4, 5)).expect("a node");
        assert_eq!(covered(map.entry(name).expect("an entry")), "name: api");
        let item = map.node_at(at(5, 40)).expect("a node");
        let entry = map.entry(item).expect("an item");
        assert!(entry.item);
        assert_eq!(covered(entry), "127.0.0.1:2");
        let discovery = map.node_at(at(5, 5)).expect("a node");
        assert_eq!(
            covered(map.entry(discovery).expect("an entry")),
            "discovery: { static: [127.0.0.1:1, 127.0.0.1:2] }"
        );
        let upstream = map.container_of(discovery).expect("held");
        assert_eq!(map.shape(upstream), Shape::BlockMapping);
        assert_eq!(map.children(upstream).len(), 4);
        assert_eq!(map.entry(0), None);
    }

    #[test]
    fn absent_paths_fall_back_to_the_parent_key() {
        let map = SourceMap::build(TEXT);
        assert_eq!(map.position_of("upstreams[0].timeouts.connect"), at(4, 5));
        assert_eq!(map.position_of("service.port"), at(1, 1));
        assert_eq!(map.position_of("admin.listen"), at(1, 1));
    }

    #[test]
    fn parent_strips_one_segment() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
