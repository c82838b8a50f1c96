//! Tokens a provider verified, with their claims, so a token sent again
//! (every request of a session carries the same one) skips the signature
//! check: bounded (`cache_size` per provider; 0 turns it off), an entry
//! kept until the token expires (`exp` + leeway) and at most
//! [`MAX_AGE_SECONDS`], and only while the provider's keys are the ones it was
//! verified with (a changed JWKS empties it in effect: a token signed by a
//! removed key is refused at once). When full, expired entries go first,
//! then an arbitrary one. Keyed by the whole token, so a token differing in
//! any byte is verified in full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use super::verify::Claims;

/// The longest a verified token is kept, whatever its `exp`.
pub(super) const MAX_AGE_SECONDS: f64 = 300.0;

pub(super) struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

struct Entry {
    claims: Arc<Claims>,
    /// Unix time after which the entry is stale.
    until: f64,
    /// The provider's keys it was verified with.
    keys: u64,
}

impl TokenCache {
    pub(super) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The claims of `token` when it was verified with `keys` and is still fresh at `now`.
    pub(super) fn get(&self, token: &str, keys: u64, now: f64) -> Option<Arc<Claims>> {
        if self.capacity == 0 {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(token)?;
        (entry.keys == keys && now < entry.until).then(|| Arc::clone(&entry.claims))
    }

    /// Keeps `token`, verified at `now` with `keys`, until its `exp` (+ `leeway`).
    pub(super) fn put(&self, token: &str, claims: &Arc<Claims>, keys: u64, now: f64, leeway: f64) {
        if self.capacity == 0 {
            return;
        }
        let expires = claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|exp| exp + leeway);
        let until = expires.map_or(now + MAX_AGE_SECONDS, |at| at.min(now + MAX_AGE_SECONDS));
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            entries.retain(|_, entry| now < entry.until);
            if entries.len() >= self.capacity
                && let Some(any) = entries.keys().next().cloned()
            {
                entries.remove(&any);
            }
        }
        let entry = Entry {
            claims: Arc::clone(claims),
            until,
            keys,
        };
        entries.insert(token.into(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<f64>) -> Arc<Claims> {
        let mut claims = Claims::new();
        if let Some(exp) = exp {
            claims.insert("exp".into(), exp.into());
        }
        Arc::new(claims)
    }

    #[test]
    fn an_entry_lives_until_exp_plus_leeway_and_only_with_its_keys() {
        let cache = TokenCache::new(10);
        cache.put("a", &claims(Some(1000.0)), 7, 900.0, 60.0);
        assert!(cache.get("a", 7, 1059.0).is_some());
        assert!(cache.get("a", 7, 1060.0).is_none(), "exp + leeway passed");
        assert!(cache.get("a", 8, 950.0).is_none(), "other keys");
        assert!(cache.get("b", 7, 950.0).is_none());
        cache.put("c", &claims(None), 7, 0.0, 60.0);
        assert!(cache.get("c", 7, MAX_AGE_SECONDS - 1.0).is_some());
        assert!(
            cache.get("c", 7, MAX_AGE_SECONDS).is_none(),
            "at most MAX_AGE"
        );
    }

    #[test]
    fn it_is_bounded_and_drops_expired_entries_first() {
        let cache = TokenCache::new(2);
        cache.put("old", &claims(Some(10.0)), 0, 0.0, 0.0);
        cache.put("a", &claims(Some(1000.0)), 0, 0.0, 0.0);
        cache.put("b", &claims(Some(1000.0)), 0, 20.0, 0.0);
        assert!(cache.get("a", 0, 30.0).is_some() && cache.get("b", 0, 30.0).is_some());
        cache.put("c", &claims(Some(1000.0)), 0, 30.0, 0.0);
        let kept = ["a", "b", "c"]
            .iter()
            .filter(|t| cache.get(t, 0, 30.0).is_some())
            .count();
        assert_eq!(kept, 2);
        let off = TokenCache::new(0);
        off.put("a", &claims(None), 0, 0.0, 0.0);
        assert!(off.get("a", 0, 1.0).is_none());
    }
}
