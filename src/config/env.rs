//! `${VAR}` expansion from the environment. `${VAR}`, `${VAR:-default}`
//! (and the other Docker Compose forms: `${VAR-d}`, `${VAR:+alt}`,
//! `${VAR:?message}`, bare `$VAR`) are expanded inside scalar *values*, never
//! in keys; `$$` is a literal `$`. Expansion happens per scalar after YAML
//! parsing (serde-saphyr's `properties` feature), so a variable's value can
//! never inject YAML structure and source positions stay those of the file.
//!
//! This module scans the value scalars first, looks up every variable they
//! name through an injectable lookup, and rejects — all at once, each with
//! line/column/path — every top-level `${VAR}` or `$VAR` whose variable is
//! not set. (References nested inside a default are expanded by
//! serde-saphyr; an unset one there expands to "".)
//!
//! A document from the `config_source` (a Consul KV value) may read only
//! the variables the local file lists (`config_source.consul_kv.allowed_env`):
//! every reference to another one, in any form, is rejected unread, so
//! whoever can write the key cannot copy a secret of the environment into a
//! header or a host name.

use std::collections::HashMap;

use serde_saphyr::granit_parser::ScalarStyle;

use super::locate::{NodeId, Position, ValueScalar};

/// A variable reference that cannot be expanded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unset {
    /// The scalar that holds the reference.
    pub(crate) node: NodeId,
    pub(crate) path: String,
    pub(crate) position: Position,
    pub(crate) message: String,
}

/// The variables a document may read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Readable<'a> {
    /// Any (the local file).
    All,
    /// Only these names (a document from the `config_source`).
    Only(&'a [String]),
}

/// The values of the variables `scalars` reference, and every required
/// reference to a variable `lookup` does not know, and every reference to
/// a variable that is not `readable`.
pub(crate) fn resolve(
    text: &str,
    scalars: &[ValueScalar],
    lookup: &dyn Fn(&str) -> Option<String>,
    readable: Readable<'_>,
) -> (HashMap<String, String>, Vec<Unset>) {
    let mut values = HashMap::new();
    let mut unset = Vec::new();
    for scalar in scalars {
        for reference in references(&scalar.value) {
            if let Readable::Only(names) = readable
                && !names.iter().any(|name| name == reference.name)
            {
                unset.push(Unset {
                    node: scalar.node,
                    path: scalar.path.clone(),
                    position: position_in_source(text, scalar, reference.offset),
                    message: format!(
                        "environment variable `{}` is not in the local file's \
                         config_source allowed_env: a configuration from the config source \
                         (Consul KV or etcd) reads only the variables listed there (write `$$` \
                         for a literal `$`)",
                        reference.name
                    ),
                });
                continue;
            }
            match lookup(reference.name) {
                Some(value) => {
                    values.insert(reference.name.to_owned(), value);
                }
                None if reference.required => unset.push(Unset {
                    node: scalar.node,
                    path: scalar.path.clone(),
                    position: position_in_source(text, scalar, reference.offset),
                    message: if reference.braced {
                        format!(
                            "environment variable `{0}` is not set (write `${{{0}:-default}}` to give a default)",
                            reference.name
                        )
                    } else {
                        format!(
                            "environment variable `{}` is not set (write `$$` for a literal `$`)",
                            reference.name
                        )
                    },
                }),
                None => {}
            }
        }
    }
    (values, unset)
}

/// The key paths of the `scalars` that reference a variable.
pub(crate) fn expanded_paths(scalars: &[ValueScalar]) -> Vec<String> {
    (scalars.iter())
        .filter(|scalar| !references(&scalar.value).is_empty())
        .map(|scalar| scalar.path.clone())
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct Reference<'a> {
    name: &'a str,
    /// Byte offset of the `$` in the scalar.
    offset: usize,
    /// `${NAME}` or `$NAME` outside any operator text: must be set.
    required: bool,
    braced: bool,
}

/// The variable references in one scalar, following Compose's syntax.
fn references(value: &str) -> Vec<Reference<'_>> {
    let bytes = value.as_bytes();
    let mut found = Vec::new();
    // Open `${NAME<op>` whose operator text we are inside.
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 2,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                let Some(name) = name_at(value, i + 2) else {
                    i += 1;
                    continue;
                };
                let after = i + 2 + name.len();
                let rest = &value[after..];
                let operator = ["}", ":-", ":+", ":?", "-", "+", "?"]
                    .into_iter()
                    .find(|operator| rest.starts_with(operator));
                match operator {
                    Some(operator) => {
                        let closed = operator == "}";
                        found.push(Reference {
                            name,
                            offset: i,
                            required: closed && depth == 0,
                            braced: true,
                        });
                        if !closed {
                            depth += 1;
                        }
                        i = after + operator.len();
                    }
                    None => i += 1,
                }
            }
            b'$' => match name_at(value, i + 1) {
                Some(name) => {
                    found.push(Reference {
                        name,
                        offset: i,
                        required: depth == 0,
                        braced: false,
                    });
                    i += 1 + name.len();
                }
                None => i += 1,
            },
            b'}' if depth > 0 => {
                depth -= 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    found
}

/// Whether `name` is a whole variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub(crate) fn is_variable_name(name: &str) -> bool {
    name_at(name, 0) == Some(name)
}

/// A variable name (`[A-Za-z_][A-Za-z0-9_]*`) starting at byte `start`.
fn name_at(value: &str, start: usize) -> Option<&str> {
    let rest = value.get(start..)?;
    let len = rest
        .bytes()
        .enumerate()
        .take_while(|&(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()))
        .count();
    (len > 0).then(|| &rest[..len])
}

/// The position of byte `offset` of `scalar`'s value in the source, when
/// the value is written verbatim on one line; else the scalar's start.
fn position_in_source(text: &str, scalar: &ValueScalar, offset: usize) -> Position {
    let start = scalar.position;
    let quote = match scalar.style {
        ScalarStyle::Plain => 0,
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => 1,
        _ => return start,
    };
    let written = text.lines().nth(start.line.saturating_sub(1)).map(|line| {
        line.chars()
            .skip(start.column - 1 + quote)
            .collect::<String>()
    });
    match written {
        Some(written) if written.starts_with(&scalar.value) => Position {
            line: start.line,
            column: start.column + quote + scalar.value[..offset].chars().count(),
        },
        _ => start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(value: &str) -> Vec<(&str, bool)> {
        references(value)
            .into_iter()
            .map(|reference| (reference.name, reference.required))
            .collect()
    }

    #[test]
    fn finds_references() {
        assert_eq!(names("${A}"), [("A", true)]);
        assert_eq!(names("x-${A}-$B/c"), [("A", true), ("B", true)]);
        assert_eq!(names("${A:-${B}}"), [("A", false), ("B", false)]);
        assert_eq!(names("${A:-x} ${B}"), [("A", false), ("B", true)]);
        assert_eq!(names("$${A} $$B $1 $ ${ }"), []);
    }

    fn scalar(value: &str, style: ScalarStyle, column: usize) -> ValueScalar {
        ValueScalar {
            node: 0,
            path: "a".to_owned(),
            position: Position { line: 1, column },
            value: value.to_owned(),
            style,
        }
    }

    #[test]
    fn unset_reference_points_at_its_dollar() {
        let text = "a: \"é-${NOPE}\"";
        let (_, unset) = resolve(
            text,
            &[scalar("é-${NOPE}", ScalarStyle::DoubleQuoted, 4)],
            &|_| None,
            Readable::All,
        );
        assert_eq!(unset[0].position, Position { line: 1, column: 7 });
    }

    #[test]
    fn escaped_value_points_at_the_scalar() {
        let text = "a: \"\\t${NOPE}\"";
        let (_, unset) = resolve(
            text,
            &[scalar("\t${NOPE}", ScalarStyle::DoubleQuoted, 4)],
            &|_| None,
            Readable::All,
        );
        assert_eq!(unset[0].position, Position { line: 1, column: 4 });
    }
}

#[cfg(test)]
mod readable_tests {
    use super::*;

    #[test]
    fn only_listed_variables_are_read() {
        let text = "a: \"${SECRET:-x} $OK ${OK}\"";
        let scalars = [ValueScalar {
            node: 0,
            path: "a".to_owned(),
            position: Position { line: 1, column: 4 },
            value: "${SECRET:-x} $OK ${OK}".to_owned(),
            style: ScalarStyle::DoubleQuoted,
        }];
        let read = std::cell::RefCell::new(Vec::new());
        let lookup = |name: &str| {
            read.borrow_mut().push(name.to_owned());
            Some(format!("value of {name}"))
        };
        let allowed = ["OK".to_owned()];
        let (values, refused) = resolve(text, &scalars, &lookup, Readable::Only(&allowed));
        assert_eq!(*read.borrow(), ["OK", "OK"]);
        assert_eq!(values.len(), 1);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].position, Position { line: 1, column: 5 });
        assert!(
            refused[0].message.contains("`SECRET`"),
            "{}",
            refused[0].message
        );
    }
}
