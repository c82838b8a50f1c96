//! Durations in the YAML file: humantime strings such as `"250ms"`, `"5s"`,
//! `"1m"`, serialized back the same way. Rejects bare numbers (`5`: which
//! unit?) and anything humantime cannot parse.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// `#[serde(with = "duration")]` for a `Duration` field.
pub(crate) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*value))
}

/// `#[serde(with = "duration")]` for a `Duration` field.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

/// `#[serde(default, with = "duration::option")]` for an `Option<Duration>` field.
pub(crate) mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Human(Duration);

    impl Serialize for Human {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::serialize(&self.0, serializer)
        }
    }

    impl<'de> Deserialize<'de> for Human {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            super::deserialize(deserializer).map(Human)
        }
    }

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(Human).serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Human>::deserialize(deserializer)?.map(|human| human.0))
    }
}

/// Parses one duration string, with messages written for operators.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.parse::<f64>().is_ok() {
        return Err(format!(
            "duration `{text}` has no unit: write e.g. \"{text}s\" or \"{text}ms\""
        ));
    }
    humantime::parse_duration(text).map_err(|error| format!("invalid duration `{text}`: {error}"))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"250ms\", \"5s\" or \"1m\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
        self.visit_str(&value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
        self.visit_str(&value.to_string())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
        self.visit_str(&value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn bare_number_asks_for_a_unit() {
        assert_eq!(
            parse("5"),
            Err("duration `5` has no unit: write e.g. \"5s\" or \"5ms\"".to_owned())
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let message = parse("soon").unwrap_err();
        assert!(message.starts_with("invalid duration `soon`:"), "{message}");
    }
}
