//! Which requests a tap stream wants, from its query string: `upstream`
//! and `route` (exact names), `direction` (`inbound`/`outbound`), `path`
//! (a prefix of the request path), `status` (a class `2xx` … `5xx`, or one
//! code such as `503`) and `min_duration` (`250ms`, `1s`). Unknown or
//! malformed parameters are refused, so a typo never means "everything".

use std::time::Duration;

use super::event::TapEvent;

/// A status filter: one class or one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// `2xx`: 200 to 299 (the digit).
    Class(u16),
    Code(u16),
}

impl std::fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Class(class) => write!(f, "{class}xx"),
            Self::Code(code) => write!(f, "{code}"),
        }
    }
}

impl StatusFilter {
    fn parse(text: &str) -> Result<Self, String> {
        let refused =
            || format!("status `{text}`: expected a class such as 5xx or a code such as 503");
        match text.as_bytes() {
            [digit @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                Ok(Self::Class(u16::from(digit - b'0')))
            }
            _ => match text.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => Ok(Self::Code(code)),
                _ => Err(refused()),
            },
        }
    }

    fn matches(self, status: u16) -> bool {
        match self {
            Self::Class(class) => status / 100 == class,
            Self::Code(code) => status == code,
        }
    }
}

/// What one stream asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub upstream: Option<String>,
    pub route: Option<String>,
    pub direction: Option<String>,
    pub path_prefix: Option<String>,
    pub status: Option<StatusFilter>,
    pub min_duration: Option<Duration>,
}

/// A parsed tap query: the filter and how to stream.
#[derive(Debug, Clone, PartialEq)]
pub struct TapQuery {
    pub filter: Filter,
    /// Request and response headers in each event (`headers=true`).
    pub headers: bool,
    /// Events per second asked for (`rate`), at most the configured maximum.
    pub rate: Option<u32>,
    /// `format=sse` or `format=ndjson`, when given.
    pub format: Option<String>,
}

impl TapQuery {
    /// Parses `query` (the URI's query, percent-encoded).
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut parsed = TapQuery {
            filter: Filter::default(),
            headers: false,
            rate: None,
            format: None,
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            let filter = &mut parsed.filter;
            match key.as_ref() {
                "upstream" => filter.upstream = Some(value),
                "route" => filter.route = Some(value),
                "direction" if value == "inbound" || value == "outbound" => {
                    filter.direction = Some(value)
                }
                "path" if value.starts_with('/') => filter.path_prefix = Some(value),
                "status" => filter.status = Some(StatusFilter::parse(&value)?),
                "min_duration" => {
                    let duration = humantime::parse_duration(&value).map_err(|error| {
                        format!("min_duration `{value}`: {error} (e.g. 250ms, 1s)")
                    })?;
                    filter.min_duration = Some(duration);
                }
                "headers" if value == "true" || value == "false" => {
                    parsed.headers = value == "true"
                }
                "rate" => match value.parse::<u32>() {
                    Ok(rate) if rate > 0 => parsed.rate = Some(rate),
                    _ => return Err(format!("rate `{value}`: expected events per second, > 0")),
                },
                "format" if value == "sse" || value == "ndjson" => parsed.format = Some(value),
                "direction" | "path" | "headers" | "format" => {
                    return Err(format!("{key} `{value}`: {}", expected(&key)));
                }
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`; the filters are upstream, route, direction, \
                         path, status, min_duration; also headers, rate, format"
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

fn expected(key: &str) -> &'static str {
    match key {
        "direction" => "expected inbound or outbound",
        "path" => "expected a path prefix starting with /",
        "headers" => "expected true or false",
        _ => "expected sse or ndjson",
    }
}

impl Filter {
    pub fn matches(&self, event: &TapEvent) -> bool {
        let equal = |wanted: &Option<String>, actual: Option<&str>| {
            wanted
                .as_deref()
                .is_none_or(|wanted| Some(wanted) == actual)
        };
        equal(&self.upstream, Some(&event.upstream))
            && equal(&self.route, event.route.as_deref())
            && equal(&self.direction, Some(event.direction))
            && (self.path_prefix.as_deref()).is_none_or(|prefix| event.path.starts_with(prefix))
            && self
                .status
                .is_none_or(|status| status.matches(event.status))
            && self.min_duration.is_none_or(|min| event.duration >= min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_filter_and_refuses_typos() {
        let query = TapQuery::parse(
            "upstream=api&route=r1&direction=outbound&path=%2Fv1&status=5xx&min_duration=250ms&headers=true&rate=5&format=sse",
        )
        .unwrap();
        assert_eq!(query.filter.upstream.as_deref(), Some("api"));
        assert_eq!(query.filter.path_prefix.as_deref(), Some("/v1"));
        assert_eq!(query.filter.status, Some(StatusFilter::Class(5)));
        assert_eq!(query.filter.min_duration, Some(Duration::from_millis(250)));
        assert!(query.headers);
        assert_eq!(query.rate, Some(5));
        assert_eq!(
            TapQuery::parse("status=503").unwrap().filter.status,
            Some(StatusFilter::Code(503))
        );
        for bad in [
            "upstrem=api",
            "status=6xx",
            "status=abc",
            "min_duration=5",
            "rate=0",
            "path=v1",
            "headers=yes",
            "direction=up",
        ] {
            assert!(TapQuery::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_classes_and_codes_match() {
        assert!(StatusFilter::Class(5).matches(503));
        assert!(!StatusFilter::Class(5).matches(499));
        assert!(StatusFilter::Code(404).matches(404));
        assert!(!StatusFilter::Code(404).matches(400));
    }
}
