//! Typed deserialization of the configuration text reporting every
//! structural error — unknown keys, wrongly typed values, durations without
//! a unit, unknown variants, missing fields — where serde-saphyr stops at its
//! first: after each error the entry it is about is blanked out of the text
//! (`prune`) and the text deserialized again, at most `MAX_ROUNDS` times
//! (a last error then says the search stopped).
//! Errors that only the pruning caused (a required key dropped for its bad
//! value, now "missing") are not reported. Values the caller sets aside
//! (unset variables) are pruned from the start. Positions are those of the
//! file, paths come from `locate`. A text that is not one well-formed YAML
//! document gets a single round: its syntax error is reported alone.

use serde_saphyr::{MessageFormatter, Options, UserMessageFormatter};

use super::Config;
use super::locate::{NodeId, Position, SourceMap, join};
use super::prune::{Pruned, is_one_document};

/// Deserializations tried at most, which bounds the errors reported.
const MAX_ROUNDS: usize = 50;

/// One structural error, positioned in the file.
#[derive(Debug)]
pub(crate) struct StructuralError {
    pub(crate) position: Position,
    pub(crate) path: String,
    pub(crate) message: String,
}

/// What deserializing found.
pub(crate) struct Deserialized {
    /// The configuration without the entries that had errors; `None` when
    /// pruning could not get rid of them all.
    pub(crate) config: Option<Config>,
    /// In the order found.
    pub(crate) errors: Vec<StructuralError>,
    /// Every error was an unknown key: `config` is then exactly what the
    /// file sets, and semantic checks judge it fairly.
    pub(crate) only_unknown_keys: bool,
}

/// Deserializes `text` (the one `source` was built from) with `options`,
/// without the entries of `set_aside` (values whose errors are reported
/// already: unset variables).
pub(crate) fn deserialize(
    text: &str,
    source: &SourceMap,
    options: &Options,
    set_aside: &[NodeId],
) -> Deserialized {
    let mut pruned = Pruned::new(text, source);
    for &value in set_aside {
        if !pruned.is_removed(value) {
            pruned.remove(value);
        }
    }
    let mut errors = Vec::new();
    let mut only_unknown_keys = set_aside.is_empty();
    let rounds = if is_one_document(text) { MAX_ROUNDS } else { 1 };
    // True until a round ends the search early: every round then found an
    // error and more may be left.
    let mut out_of_rounds = rounds == MAX_ROUNDS;
    for _ in 0..rounds {
        let error = match serde_saphyr::from_str_with_options(&pruned.text(), options.clone()) {
            Ok(config) => {
                return Deserialized {
                    config: Some(config),
                    errors,
                    only_unknown_keys,
                };
            }
            Err(error) => error,
        };
        only_unknown_keys &= matches!(error, serde_saphyr::Error::SerdeUnknownField { .. });
        let found = examine(&error, source, &pruned);
        if !found.caused_by_pruning {
            errors.push(found.error);
        }
        if !found.culprit.is_some_and(|culprit| pruned.remove(culprit)) {
            out_of_rounds = false;
            break;
        }
    }
    if out_of_rounds {
        errors.push(StructuralError {
            position: Position { line: 0, column: 0 },
            path: String::new(),
            message: format!(
                "stopped after {MAX_ROUNDS} rounds of structural problems; fix these and validate again"
            ),
        });
    }
    Deserialized {
        config: None,
        errors,
        only_unknown_keys,
    }
}

/// One serde-saphyr error, located.
struct Examined {
    error: StructuralError,
    /// The node whose entry to remove before trying again.
    culprit: Option<NodeId>,
    /// The error is about an entry removed earlier, or a key missing because
    /// it was removed.
    caused_by_pruning: bool,
}

fn examine(error: &serde_saphyr::Error, source: &SourceMap, pruned: &Pruned) -> Examined {
    let message = message(error);
    let Some(location) = error.location() else {
        return Examined {
            error: StructuralError {
                position: Position { line: 0, column: 0 },
                path: String::new(),
                message,
            },
            culprit: None,
            caused_by_pruning: false,
        };
    };
    let position = Position {
        line: usize::try_from(location.line()).unwrap_or(usize::MAX),
        column: usize::try_from(location.column()).unwrap_or(usize::MAX),
    };
    let node = source.node_at(position);
    if let serde_saphyr::Error::SerdeMissingField { field, .. } = error {
        // serde-saphyr reports a missing field at the last key it read;
        // point at the mapping that lacks the field instead.
        let mapping = node.and_then(|id| {
            if source.is_key(id) {
                source.container_of(id)
            } else {
                Some(id)
            }
        });
        let path = mapping.map_or("", |id| source.path(id)).to_owned();
        let field_path = join(&path, field);
        let caused_by_pruning = mapping.is_some_and(|id| {
            (source.children(id).into_iter())
                .any(|child| source.path(child) == field_path && pruned.is_removed(child))
        });
        return Examined {
            error: StructuralError {
                position: source.position_of(&path),
                path,
                message,
            },
            culprit: mapping,
            caused_by_pruning,
        };
    }
    let path = node.map_or("", |id| source.path(id)).to_owned();
    let caused_by_pruning = node.is_some_and(|id| pruned.is_removed(id));
    // Past the pruned entries: the placeholder `{}` of an emptied mapping
    // stands where its first (removed) key was.
    let mut culprit = node;
    while let Some(id) = culprit
        && pruned.is_removed(id)
    {
        culprit = source.container_of(id);
    }
    Examined {
        error: StructuralError {
            position,
            path,
            message,
        },
        culprit,
        caused_by_pruning,
    }
}

/// serde-saphyr's message for operators, on one line.
fn message(error: &serde_saphyr::Error) -> String {
    match error {
        serde_saphyr::Error::Eof { .. } => {
            "the file holds no configuration (at least `service: { name: ... }` is required)"
                .to_owned()
        }
        _ => UserMessageFormatter
            .format_message(error)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    }
}
