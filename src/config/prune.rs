//! The configuration text with entries blanked out, so that deserializing
//! can go on past a structural error: `deserialize` drops the mapping entry
//! or sequence item an error is about and tries again. Blanking writes spaces
//! over the entry's characters (line breaks kept), so every other node stays
//! at its line and column and errors in the pruned text are positioned and
//! named through the original `SourceMap`.

use serde_saphyr::granit_parser::{Event, Parser};

use super::locate::{Entry, NodeId, Shape, SourceMap};

/// The text of a `SourceMap`, minus the entries removed so far.
pub(crate) struct Pruned<'a> {
    source: &'a SourceMap,
    text: Vec<char>,
    removed: Vec<Entry>,
}

impl<'a> Pruned<'a> {
    /// `text` is the one `source` was built from.
    pub(crate) fn new(text: &str, source: &'a SourceMap) -> Pruned<'a> {
        Pruned {
            source,
            text: text.chars().collect(),
            removed: Vec::new(),
        }
    }

    pub(crate) fn text(&self) -> String {
        self.text.iter().collect()
    }

    /// Whether `id` is inside an entry removed so far.
    pub(crate) fn is_removed(&self, id: NodeId) -> bool {
        (self.removed.iter()).any(|entry| (entry.first..=entry.last).contains(&id))
    }

    /// Removes the mapping entry or sequence item `id` belongs to. A block
    /// collection left empty becomes `{}` or `[]` (blank, it would read as
    /// null). Returns false, leaving the text as it was, when `id` is not part
    /// of a removable entry (the document itself, a complex key) or when the
    /// text would no longer be one well-formed YAML document.
    pub(crate) fn remove(&mut self, id: NodeId) -> bool {
        let Some(entry) = self.source.entry(id) else {
            return false;
        };
        let before = self.text.clone();
        let start = if entry.item {
            self.dash_before(entry.start).unwrap_or(entry.start)
        } else {
            entry.start
        };
        self.blank(start, entry.end);
        // An empty value ends where its key does, before the `:`.
        if !entry.item {
            self.blank_next(entry.end, ':', |c| matches!(c, ' ' | '\t'));
        }
        // In a flow collection the separator goes too (`{ a: 1, b: 2 }`).
        self.blank_next(entry.end, ',', char::is_whitespace);
        self.removed.push(entry);
        if let Some(container) = self.source.container_of(entry.first) {
            self.mark_if_emptied(container);
        }
        if is_one_document(&self.text()) {
            return true;
        }
        self.text = before;
        self.removed.pop();
        false
    }

    /// Writes `{}` or `[]` where the block collection `id` starts when all
    /// its children are removed.
    fn mark_if_emptied(&mut self, id: NodeId) {
        let empty = match self.source.shape(id) {
            Shape::BlockMapping => "{}",
            Shape::BlockSequence => "[]",
            Shape::Scalar | Shape::Flow => return,
        };
        if !(self.source.children(id).into_iter()).all(|child| self.is_removed(child)) {
            return;
        }
        let start = self.source.start(id);
        for (at, c) in (start..).zip(empty.chars()) {
            if self.text.get(at).is_some_and(|&old| old != '\n') {
                self.text[at] = c;
            }
        }
    }

    /// The `-` that introduces the block sequence item starting at `start`.
    fn dash_before(&self, start: usize) -> Option<usize> {
        let at = (0..start)
            .rev()
            .find(|&at| !matches!(self.text[at], ' ' | '\t'))?;
        (self.text[at] == '-').then_some(at)
    }

    /// Blanks the first character from `from` on that is not `skip`, if it
    /// is `wanted`.
    fn blank_next(&mut self, from: usize, wanted: char, skip: fn(char) -> bool) {
        let next = (from..self.text.len()).find(|&at| !skip(self.text[at]));
        if let Some(at) = next
            && self.text[at] == wanted
        {
            self.text[at] = ' ';
        }
    }

    fn blank(&mut self, start: usize, end: usize) {
        let end = end.min(self.text.len());
        for c in &mut self.text[start..end] {
            if !matches!(c, '\n' | '\r') {
                *c = ' ';
            }
        }
    }
}

/// Whether `text` parses as exactly one YAML document.
pub(crate) fn is_one_document(text: &str) -> bool {
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    while let Some(event) = parser.next_event() {
        match event {
            Err(_) => return false,
            Ok((Event::DocumentStart(..), _)) => documents += 1,
            Ok((Event::StreamEnd, _)) => break,
            Ok(_) => {}
        }
    }
    documents == 1
}
