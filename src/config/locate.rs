//! Source positions of keys and values. Walks the YAML text with the
//! position-aware event parser serde-saphyr itself uses (granit-parser) and
//! records, for every node, its key path (`upstreams[1].discovery.static[0]`)
//! and 1-based line/column. Used to put a path on serde-saphyr's errors (they
//! carry a position but no path) and a position on semantic errors (they
//! carry a path but no position). It rejects nothing: on a syntax error it
//! keeps what it saw so far and serde-saphyr reports the error itself.

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
    pub(crate) path: String,
    pub(crate) position: Position,
    pub(crate) value: String,
    pub(crate) style: ScalarStyle,
}

enum Frame {
    /// `key` is `None` while the next node is a key.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
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
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let position = Position {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            match event {
                Event::Scalar(value, style, ..) => match next_slot(&mut stack) {
                    Slot::Key(map_path) => {
                        map.push_key(&mut stack, &map_path, &value, position);
                    }
                    Slot::Value(path) => {
                        map.push(path.clone(), position, Role::Value);
                        map.scalars.push(ValueScalar {
                            path,
                            position,
                            value: value.into_owned(),
                            style,
                        });
                    }
                },
                Event::Alias(_) => match next_slot(&mut stack) {
                    Slot::Key(map_path) => map.push_key(&mut stack, &map_path, "*", position),
                    Slot::Value(path) => map.push(path, position, Role::Value),
                },
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = match next_slot(&mut stack) {
                        // A complex key (a mapping or sequence used as a key).
                        Slot::Key(map_path) => {
                            map.push_key(&mut stack, &map_path, "?", position);
                            join(&map_path, "?")
                        }
                        Slot::Value(path) => {
                            map.push(path.clone(), position, Role::Value);
                            path
                        }
                    };
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                // Only the first document is configuration.
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        map
    }

    fn push(&mut self, path: String, position: Position, role: Role) {
        self.nodes.push(Node {
            path,
            position,
            role,
        });
    }

    /// Records a key and makes its mapping expect the value.
    fn push_key(&mut self, stack: &mut [Frame], map_path: &str, key: &str, position: Position) {
        if let Some(Frame::Map { key: slot, .. }) = stack.last_mut() {
            *slot = Some(key.to_owned());
        }
        self.push(join(map_path, key), position, Role::Key);
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

    /// The key path of the node at `position`; between nodes, of the last
    /// node before it. Several nodes can start at one position (a block
    /// mapping starts at its first key): the innermost wins, unless
    /// `mapping` asks for the mapping that holds the key found there.
    pub(crate) fn path_at(&self, position: Position, mapping: bool) -> String {
        let node = self
            .nodes
            .iter()
            .rev()
            .find(|node| node.position == position)
            .or_else(|| {
                self.nodes
                    .iter()
                    .rev()
                    .find(|node| node.position < position)
            });
        match node {
            Some(node) if mapping && node.role == Role::Key => {
                parent(&node.path).unwrap_or_default().to_owned()
            }
            Some(node) => node.path.clone(),
            None => String::new(),
        }
    }
}

fn next_slot(stack: &mut [Frame]) -> Slot {
    match stack.last_mut() {
        None => Slot::Value(String::new()),
        Some(Frame::Seq { path, next }) => {
            let slot = Slot::Value(format!("{path}[{next}]"));
            *next += 1;
            slot
        }
        Some(Frame::Map { path, key }) => match key.take() {
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

    #[test]
    fn values_and_keys_have_paths() {
        let map = SourceMap::build(TEXT);
        assert_eq!(map.position_of("service.name"), at(2, 9));
        assert_eq!(
            map.position_of("upstreams[0].discovery.static[1]"),
            at(5, 40)
        );
        assert_eq!(
            map.path_at(at(5, 20), false),
            "upstreams[0].discovery.static"
        );
        assert_eq!(map.path_at(at(4, 5), false), "upstreams[0].name");
        assert_eq!(map.path_at(at(4, 5), true), "upstreams[0]");
        assert_eq!(map.path_at(at(5, 5), true), "upstreams[0]");
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
