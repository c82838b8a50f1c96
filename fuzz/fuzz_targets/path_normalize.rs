//! Request-path normalization (`path_normalization`) on arbitrary paths and
//! every combination of its options: never a panic, and what it returns is
//! a fixed point — rooted, no dot segments, no doubled `/` when merging, no
//! decodable or lower-case escape when normalizing, no encoded slash when
//! those are refused — and still a valid URI path when the input was one.
#![no_main]

use std::borrow::Cow;

use http::uri::PathAndQuery;
use libfuzzer_sys::fuzz_target;
use remora::config::{EscapedSlashesAction, PathNormalization};
use remora::path_normalize::{PathError, normalize};

const ACTIONS: [EscapedSlashesAction; 3] = [
    EscapedSlashesAction::KeepUnchanged,
    EscapedSlashesAction::RejectRequest,
    EscapedSlashesAction::UnescapeAndForward,
];

fuzz_target!(|data: &[u8]| {
    // Input: one byte of options, then the path.
    let Some((&selector, path)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let options = PathNormalization {
        normalize_path: selector & 1 != 0,
        merge_slashes: selector & 2 != 0,
        path_with_escaped_slashes_action: ACTIONS[usize::from(selector >> 2) % ACTIONS.len()],
    };
    let normalized = match normalize(path, &options) {
        Ok(normalized) => normalized,
        Err(PathError::NotAPath) => {
            assert!(!path.starts_with('/'));
            return;
        }
        Err(PathError::MalformedEscape | PathError::EscapedSlash) => return,
    };
    assert!(normalized.starts_with('/'));
    assert!(
        matches!(normalize(&normalized, &options), Ok(Cow::Borrowed(again)) if again == normalized),
        "not idempotent: {path:?} → {normalized:?}"
    );
    if options.merge_slashes {
        assert!(!normalized.contains("//"), "{path:?} → {normalized:?}");
    }
    if options.normalize_path {
        let dot_segment = normalized
            .split('/')
            .any(|segment| segment == "." || segment == "..");
        assert!(!dot_segment, "{path:?} → {normalized:?}");
        for escape in normalized.split('%').skip(1) {
            let hex = escape.get(..2).expect("complete escape");
            let upper_hex = hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
            assert!(upper_hex, "{path:?} → {normalized:?}");
            let byte = u8::from_str_radix(hex, 16).expect("hex escape");
            let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
            assert!(!unreserved, "{path:?} → {normalized:?}");
        }
    }
    if options.path_with_escaped_slashes_action == EscapedSlashesAction::RejectRequest {
        let upper = normalized.to_ascii_uppercase();
        assert!(
            !upper.contains("%2F") && !upper.contains("%5C"),
            "{path:?} → {normalized:?}"
        );
    }
    let plain_path = !path.contains(['?', '#']);
    if plain_path && PathAndQuery::try_from(path).is_ok() {
        assert!(
            PathAndQuery::try_from(normalized.as_ref()).is_ok(),
            "{path:?} → {normalized:?} is no longer a valid path"
        );
    }
});
