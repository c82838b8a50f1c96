//! What `/config` shows: the effective configuration as JSON with every
//! secret-bearing value replaced by `<redacted>`. [`Secret`]s
//! (`consul.token`) redact themselves; here, every value written with an
//! environment variable (`${VAR}`, `$VAR`: where secrets live — a route's
//! `authorization` header, a password in a URL) and every other copy of such
//! a value (a YAML alias of it), the value of every key named like a
//! credential (`authorization`, `cookie`, `x-api-key`, `*token*`,
//! `*secret*`, `*password*`: header values written literally, e.g. in a
//! Consul KV document, which may not read the environment), and the user
//! information of every URL (`http://user:password@consul:8500`, whatever
//! key holds it). TLS settings are file paths, shown as they are: key
//! material is never in the configuration itself.
//!
//! [`Secret`]: super::Secret

use serde_json::Value;

use super::Config;

/// What a redacted value shows.
pub(super) const REDACTED: &str = "<redacted>";

/// `config` as pretty JSON, secrets redacted.
pub fn shown(config: &Config) -> serde_json::Result<String> {
    let mut json = serde_json::to_value(config)?;
    let mut expanded = Vec::new();
    for path in &config.from_env {
        expanded.extend(redact_path(&mut json, path));
    }
    expanded.retain(|value| !value.is_empty());
    redact_secrets(&mut json, &expanded);
    serde_json::to_string_pretty(&json)
}

impl Config {
    /// The values under `key` (a key path) now hold `from`'s: they count as
    /// written with environment variables where they were in `from`.
    pub fn from_env_as_in(&mut self, from: &Config, key: &str) {
        self.from_env.retain(|path| !is_under(path, key));
        (self.from_env).extend(
            from.from_env
                .iter()
                .filter(|path| is_under(path, key))
                .cloned(),
        );
    }
}

/// Whether `path` is `key` or below it.
fn is_under(path: &str, key: &str) -> bool {
    path.strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Replaces the value at key path `path` (`a.b[2].c`) of `json`, and returns
/// it when it was a string. A map key may hold dots (header names): the
/// longest key that fits is taken. A path that goes deeper than the JSON (a
/// value shown in another shape) redacts the value where it stops.
fn redact_path(json: &mut Value, path: &str) -> Option<String> {
    if path.is_empty() {
        return redact(json);
    }
    match json {
        Value::Array(items) => {
            let index = path.strip_prefix('[').and_then(|rest| rest.split_once(']'));
            if let Some((index, rest)) = index
                && let Ok(index) = index.parse::<usize>()
                && let Some(item) = items.get_mut(index)
            {
                return redact_path(item, rest.strip_prefix('.').unwrap_or(rest));
            }
            None
        }
        Value::Object(map) => {
            let key = (map.keys())
                .filter(|key| is_under(path, key))
                .max_by_key(|key| key.len())
                .cloned();
            if let Some(key) = key
                && let Some(value) = map.get_mut(&key)
            {
                let rest = &path[key.len()..];
                return redact_path(value, rest.strip_prefix('.').unwrap_or(rest));
            }
            None
        }
        _ => redact(json),
    }
}

/// Replaces `json` with [`REDACTED`]; returns what it was when a string.
fn redact(json: &mut Value) -> Option<String> {
    match std::mem::replace(json, Value::String(REDACTED.to_owned())) {
        Value::String(text) => Some(text),
        _ => None,
    }
}

/// Redacts every string of `json` that is one of `expanded`, every value
/// under a key named like a credential, and the user information of every
/// URL.
fn redact_secrets(json: &mut Value, expanded: &[String]) {
    match json {
        Value::String(text) => {
            if expanded.contains(text) {
                redact(json);
            } else if let Some(redacted) = without_userinfo(text) {
                *text = redacted;
            }
        }
        Value::Array(items) => (items.iter_mut()).for_each(|item| redact_secrets(item, expanded)),
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if names_a_credential(key) && value.is_string() {
                    redact(value);
                } else {
                    redact_secrets(value, expanded);
                }
            }
        }
        _ => {}
    }
}

/// True for a key (a header name, mostly) whose value is a credential.
fn names_a_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('_', "-");
    if key.ends_with("-file") {
        return false; // a path (`consul.token_file`)
    }
    matches!(
        key.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "secret", "password", "api-key", "apikey"]
        .iter()
        .any(|word| key.contains(word))
}

/// `scheme://<redacted>@host...` for a `scheme://user[:password]@host...`.
fn without_userinfo(text: &str) -> Option<String> {
    let start = text.find("://")? + "://".len();
    let authority = text[start..]
        .find(['/', '?', '#'])
        .map_or(&text[start..], |end| &text[start..start + end]);
    let at = start + authority.rfind('@')?;
    Some(format!("{}{REDACTED}{}", &text[..start], &text[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_reach_values_through_dotted_keys() {
        let mut json = serde_json::json!({
            "a": [{ "set": { "x.token": "s1", "x": "keep" } }, { "b": "keep" }],
            "c": "s2",
            "d": { "e": 5 }
        });
        for path in [
            "a[0].set.x.token",
            "c",
            "d.e.deeper",
            "a[7].b",
            "missing.key",
        ] {
            redact_path(&mut json, path);
        }
        assert_eq!(
            json,
            serde_json::json!({
                "a": [{ "set": { "x.token": REDACTED, "x": "keep" } }, { "b": "keep" }],
                "c": REDACTED,
                "d": { "e": REDACTED }
            })
        );
    }

    #[test]
    fn copies_of_expanded_values_and_credential_keys_are_redacted() {
        let mut json = serde_json::json!({
            "set": { "authorization": "Bearer literal", "X-Api-Key": "k", "x-tenant": "t" },
            "alias": { "x-forwarded-secret": 5, "x-copy": "from-env" },
            "kept": ["from-env-not", "http://consul:8500"]
        });
        redact_secrets(&mut json, &["from-env".to_owned()]);
        assert_eq!(
            json,
            serde_json::json!({
                "set": { "authorization": REDACTED, "X-Api-Key": REDACTED, "x-tenant": "t" },
                "alias": { "x-forwarded-secret": 5, "x-copy": REDACTED },
                "kept": ["from-env-not", "http://consul:8500"]
            })
        );
    }

    #[test]
    fn userinfo_is_redacted_in_any_url() {
        assert_eq!(
            without_userinfo("https://user:pa@ss@consul:8501/x?y=@").as_deref(),
            Some("https://<redacted>@consul:8501/x?y=@")
        );
        assert_eq!(without_userinfo("http://consul:8500/a@b"), None);
        assert_eq!(without_userinfo("no url@all"), None);
    }
}
