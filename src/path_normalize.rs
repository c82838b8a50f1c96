//! Request-path normalization, so that routes match, rewrite and forward a
//! path in one canonical spelling: `//admin`, `/./admin`, `/x/../admin` and
//! `/%61dmin` are all `/admin`, and the origin gets exactly what was matched.
//!
//! The path alone (the query is never touched) goes through, in order:
//! 1. **Escapes.** Every `%` must start two hex digits, else the path is
//!    refused ([`PathError::MalformedEscape`]). An encoded `/` or `\`
//!    (`%2F`, `%5C`, either case) follows `path_with_escaped_slashes_action`:
//!    refused ([`PathError::EscapedSlash`], the default), decoded
//!    (`unescape_and_forward`, so it counts as a separator below) or kept as
//!    an escape (`keep_unchanged`). With `normalize_path`, escapes of
//!    unreserved characters (ALPHA / DIGIT / `-` `.` `_` `~`, RFC 3986 §2.3)
//!    are decoded and the hex of every other escape is upper-cased (§6.2.2.1,
//!    §6.2.2.2). With `normalize_path: false` and `keep_unchanged`, escapes
//!    are not read at all.
//! 2. **Dot segments** (`normalize_path`): RFC 3986 §5.2.4 on the segments
//!    between `/`s — `.` is dropped, `..` drops the segment before it (at the
//!    root it drops nothing: `/../a` is `/a`), and a path ending in `.` or
//!    `..` keeps its trailing `/`. Empty segments count as segments here, as
//!    in the RFC (`/a//../b` is `/a/b`).
//! 3. **Slashes** (`merge_slashes`): runs of `/` become one.
//!
//! The result starts with `/`, and normalizing it again changes nothing.
//! A target that is not a path (it does not start with `/`) is refused
//! ([`PathError::NotAPath`]); the listener lets `OPTIONS *` through before
//! asking.

use std::borrow::Cow;

use crate::config::{EscapedSlashesAction, PathNormalization};

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path has a malformed percent-encoding")]
    MalformedEscape,
    #[error(
        "the request path has an encoded `/` or `\\` (path_with_escaped_slashes_action: reject_request)"
    )]
    EscapedSlash,
    #[error("the request target is not a path starting with `/`")]
    NotAPath,
}

/// `path` (no query) normalized as `options` say; borrowed when unchanged.
pub fn normalize<'a>(
    path: &'a str,
    options: &PathNormalization,
) -> Result<Cow<'a, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAPath);
    }
    let unescaped = unescape(path, options)?;
    let segments_to_fix = unescaped.contains("//") || unescaped.contains("/.");
    let normalized = if segments_to_fix && (options.normalize_path || options.merge_slashes) {
        Cow::Owned(normalize_segments(&unescaped, options))
    } else {
        unescaped
    };
    if normalized == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(normalized)
}

/// Step 1: the percent-escapes.
fn unescape<'a>(path: &'a str, options: &PathNormalization) -> Result<Cow<'a, str>, PathError> {
    let action = options.path_with_escaped_slashes_action;
    let read_escapes = options.normalize_path || action != EscapedSlashesAction::KeepUnchanged;
    if !read_escapes || !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let mut unescaped = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        unescaped.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).ok_or(PathError::MalformedEscape)?;
        let byte = hex_byte(&escape[1..]).ok_or(PathError::MalformedEscape)?;
        let slash = byte == b'/' || byte == b'\\';
        match action {
            EscapedSlashesAction::RejectRequest if slash => return Err(PathError::EscapedSlash),
            EscapedSlashesAction::UnescapeAndForward if slash => {
                unescaped.push(char::from(byte));
            }
            _ if options.normalize_path && is_unreserved(byte) => {
                unescaped.push(char::from(byte));
            }
            _ if options.normalize_path => unescaped.push_str(&format!("%{byte:02X}")),
            _ => unescaped.push_str(escape),
        }
        rest = &rest[at + 3..];
    }
    unescaped.push_str(rest);
    Ok(Cow::Owned(unescaped))
}

/// `"4a"` → `0x4a`; `None` unless exactly two hex digits.
fn hex_byte(hex: &str) -> Option<u8> {
    let [high, low] = hex.as_bytes() else {
        return None;
    };
    let digit = |byte: &u8| char::from(*byte).to_digit(16);
    u8::try_from(digit(high)? * 16 + digit(low)?).ok()
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Steps 2 and 3 on a path starting with `/`.
fn normalize_segments(path: &str, options: &PathNormalization) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." | ".." if options.normalize_path => {
                if segment == ".." {
                    kept.pop();
                }
                if last {
                    kept.push("");
                }
            }
            _ => kept.push(segment),
        }
    }
    if options.merge_slashes {
        let count = kept.len();
        kept = (kept.into_iter().enumerate())
            .filter(|(index, segment)| !segment.is_empty() || index + 1 == count)
            .map(|(_, segment)| segment)
            .collect();
    }
    format!("/{}", kept.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> PathNormalization {
        PathNormalization::default()
    }

    /// Each path of `cases` normalizes to its pair under the defaults.
    fn assert_normalizes_strictly(cases: &[(&str, &str)]) {
        for (path, expected) in cases {
            assert_eq!(
                normalized(path, &strict()).as_deref(),
                Ok(*expected),
                "{path}"
            );
        }
    }

    fn normalized(path: &str, options: &PathNormalization) -> Result<String, PathError> {
        normalize(path, options).map(Cow::into_owned)
    }

    #[test]
    fn rfc_3986_dot_segment_examples() {
        // §5.4.1 and §5.4.2: each reference merged with the base path
        // `/b/c/d;p`, as §5.2.3 does, then its dot segments removed.
        let cases = [
            ("/b/c/g", "/b/c/g"),
            ("/b/c/./g", "/b/c/g"),
            ("/b/c/g/", "/b/c/g/"),
            ("/g", "/g"),
            ("/b/c/g;x", "/b/c/g;x"),
            ("/b/c/.", "/b/c/"),
            ("/b/c/./", "/b/c/"),
            ("/b/c/..", "/b/"),
            ("/b/c/../", "/b/"),
            ("/b/c/../g", "/b/g"),
            ("/b/c/../..", "/"),
            ("/b/c/../../", "/"),
            ("/b/c/../../g", "/g"),
            ("/b/c/../../../g", "/g"),
            ("/b/c/../../../../g", "/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
            ("/b/c/g.", "/b/c/g."),
            ("/b/c/.g", "/b/c/.g"),
            ("/b/c/g..", "/b/c/g.."),
            ("/b/c/..g", "/b/c/..g"),
            ("/b/c/./../g", "/b/g"),
            ("/b/c/./g/.", "/b/c/g/"),
            ("/b/c/g/./h", "/b/c/g/h"),
            ("/b/c/g/../h", "/b/c/h"),
            ("/b/c/g;x=1/./y", "/b/c/g;x=1/y"),
            ("/b/c/g;x=1/../y", "/b/c/y"),
            // §5.2.4's own walk-through.
            ("/a/b/c/./../../g", "/a/g"),
        ];
        assert_normalizes_strictly(&cases);
    }

    #[test]
    fn slashes_escapes_and_the_root() {
        let cases = [
            ("/", "/"),
            ("//", "/"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%2e%2E/admin", "/admin"),
            ("/a//b///c//", "/a/b/c/"),
            ("/a//../b", "/a/b"),
            ("/..", "/"),
            ("/../..//", "/"),
            ("/%7Euser/%41-%5f%2D%30", "/~user/A-_-0"),
            ("/%c3%a9t%c3%A9", "/%C3%A9t%C3%A9"),
            ("/100%25/%3f%23%20", "/100%25/%3F%23%20"),
            ("/é/./ü", "/é/ü"),
        ];
        assert_normalizes_strictly(&cases);
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        for path in ["/", "/api/v1/users", "/a/.hidden", "/%C3%A9"] {
            assert!(
                matches!(normalize(path, &strict()), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn malformed_escapes_and_non_paths_are_refused() {
        for path in ["/%zz", "/%4", "/a%", "/%+1", "/%1g", "/%é1"] {
            assert_eq!(
                normalized(path, &strict()),
                Err(PathError::MalformedEscape),
                "{path}"
            );
        }
        for path in ["", "*", "admin", "http://a/b"] {
            assert_eq!(
                normalized(path, &strict()),
                Err(PathError::NotAPath),
                "{path:?}"
            );
        }
    }

    #[test]
    fn escaped_slashes_follow_their_action() {
        for path in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5c..%5cadmin"] {
            assert_eq!(
                normalized(path, &strict()),
                Err(PathError::EscapedSlash),
                "{path}"
            );
        }
        let keep = PathNormalization {
            path_with_escaped_slashes_action: EscapedSlashesAction::KeepUnchanged,
            ..strict()
        };
        assert_eq!(normalized("/a%2fb/%2E/c", &keep).as_deref(), Ok("/a%2Fb/c"));
        assert_eq!(normalized("/a%5c..%2F", &keep).as_deref(), Ok("/a%5C..%2F"));
        let unescape = PathNormalization {
            path_with_escaped_slashes_action: EscapedSlashesAction::UnescapeAndForward,
            ..strict()
        };
        assert_eq!(normalized("/a%2fb", &unescape).as_deref(), Ok("/a/b"));
        assert_eq!(
            normalized("/x/y%2F..%2F%2Fz", &unescape).as_deref(),
            Ok("/x/z")
        );
        assert_eq!(normalized("/a%5Cb", &unescape).as_deref(), Ok("/a\\b"));
    }

    #[test]
    fn each_step_can_be_turned_off() {
        let no_merge = PathNormalization {
            merge_slashes: false,
            ..strict()
        };
        assert_eq!(
            normalized("//a//b/./c/..", &no_merge).as_deref(),
            Ok("//a//b/")
        );
        let no_normalize = PathNormalization {
            normalize_path: false,
            ..strict()
        };
        assert_eq!(
            normalized("//a/../%61%2e", &no_normalize).as_deref(),
            Ok("/a/../%61%2e")
        );
        assert_eq!(
            normalized("/%zz", &no_normalize),
            Err(PathError::MalformedEscape)
        );
        let nothing = PathNormalization {
            normalize_path: false,
            merge_slashes: false,
            path_with_escaped_slashes_action: EscapedSlashesAction::KeepUnchanged,
        };
        let raw = "//x/../%61%2f%zz";
        assert!(matches!(normalize(raw, &nothing), Ok(Cow::Borrowed(p)) if p == raw));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let paths = [
            "/a/./b/../../..//c/%2e%2E/%64/",
            "//.././%7e//x/..",
            "/a/b/c/.",
        ];
        for merge_slashes in [true, false] {
            let options = PathNormalization {
                merge_slashes,
                ..strict()
            };
            for path in paths {
                let once = normalized(path, &options).unwrap();
                assert_eq!(normalized(&once, &options).as_deref(), Ok(once.as_str()));
            }
        }
    }
}
