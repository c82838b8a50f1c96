//! remora's configuration: the YAML model, loading, `${VAR}` expansion and
//! validation. `load` / `parse` return either a `Config` that passed every
//! check or *all* the problems found, each as `file:line:column: path:
//! message`. Rejects YAML syntax errors, unknown keys (sections not
//! implemented yet included), wrongly typed values, durations without a
//! unit, unset environment variables and the semantic problems listed in
//! `validate/` (one module per section).
//!
//! Stages: `locate` maps key paths to positions; `env` resolves `${VAR}`
//! references (all unset ones reported); `deserialize` runs serde-saphyr
//! on the rest, reporting every structural error (it prunes the entry of
//! each error from the text, `prune`, and tries again); `validate` checks
//! the result (all problems reported, positioned through `locate`) — unless
//! an unset variable or a structural error other than an unknown key made a
//! value fall back to its default. `redact` makes what the admin `/config`
//! shows of a configuration.

/// Serde through `FromStr` / `Display` for string-typed values (host
/// names, destinations, CIDRs): the `FromStr` error is the message. Defined
/// before the modules so that they can use it.
macro_rules! string_serde {
    ($($type:ty),*) => {$(
        impl ::serde::Serialize for $type {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $type {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }
    )*};
}

mod admin;
mod authorization;
mod concurrency;
mod config_source;
mod consul;
mod deserialize;
mod discovery;
mod duration;
mod egress;
mod endpoint_address;
mod env;
mod error;
mod etcd;
mod fallback;
mod health_check;
mod hedge;
mod inbound;
mod jwt;
mod limits;
mod locate;
mod model;
mod path_normalization;
mod pool;
mod prune;
mod rate_limit;
mod redact;
mod request_token;
mod resilience;
mod routing;
mod runtime;
mod service;
mod telemetry;
mod tls;
mod transparent;
mod upgrades;
mod upstream;
mod validate;

use std::path::Path;

use serde_saphyr::{Options, PropertySyntax};

pub use admin::{AdminConfig, TapConfig};
pub use authorization::{AuthorizationRule, ClaimMatch, ClaimName, InboundAuthorization, JwtMatch};
pub use concurrency::AdaptiveConcurrency;
pub use config_source::{ConfigSource, ConsulKvSource, EtcdKeySource};
pub use consul::{ConsulConfig, Secret};
pub use discovery::{
    ConsulDiscovery, ConsulFailover, Discovery, DnsConfig, DnsDiscovery, DnsRecordType,
    EtcdDiscovery, StaticEndpoint,
};
pub use egress::{EgressAllow, EgressConfig, EgressHost, EgressName};
pub use endpoint_address::{EndpointAddress, is_hostname};
pub use error::{ConfigError, ConfigErrors};
pub use etcd::EtcdConfig;
pub use fallback::{FallbackConfig, FallbackResponse, FallbackTrigger};
pub use health_check::{
    GrpcHealthCheck, HealthCheck, HttpHealthCheck, Probe, StatusRange, TcpHealthCheck,
};
pub use hedge::{HedgeDelay, HedgePolicy};
pub use inbound::InboundConfig;
pub use jwt::{JwksConfig, JwtConfig, JwtProvider, JwtRule, TokenLocation};
pub use limits::{HeadersWithUnderscoresAction, ListenerLimits};
pub use model::Config;
pub use path_normalization::{EscapedSlashesAction, PathNormalization};
pub use pool::ConnectionPool;
pub use rate_limit::{RateLimitConfig, RateLimitKey, RateLimitOverride, RateLimitScope};
pub use redact::shown;
pub use request_token::RequestTokenConfig;
pub use resilience::{
    CircuitBreakerConfig, Condition, FailureRate, FaultAbort, FaultConfig, FaultDelay,
    OutlierDetection, RetryBackoff, RetryBudget, RetryPolicy, default_failure_conditions,
    grpc_code,
};
pub use routing::{
    BackendConfig, DEFAULT_BACKEND, DirectResponse, GrpcMatch, HeaderRules, MirrorConfig,
    PathMatch, Pattern, Redirect, Rewrite, RouteConfig, RouteMatch, SplitTargetConfig, StickyKey,
    SubsetConfig, ValueMatch,
};
pub use runtime::RuntimeConfig;
pub use service::{CheckConfig, Locality, ServiceConfig, ServiceProtocol};
pub use telemetry::{
    LogFormat, LoggingConfig, OtlpCompression, OtlpConfig, OtlpHeader, OtlpProtocol, Propagation,
    TracingConfig,
};
pub use tls::{
    AuthorizationAction, AuthorizationConfig, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    DEFAULT_TLS_RELOAD_INTERVAL, TlsConfig, TlsSource, UntilIntentionsLoad,
};
pub use transparent::{Cidr, DestinationMatch, HostName, TransparentConfig, Unmatched};
pub use upgrades::UpgradeProtocol;
pub use upstream::{
    DEFAULT_PANIC_THRESHOLD, HashOn, LoadBalancing, LoadBalancingPolicy, LocalityPolicy, Timeouts,
    UpstreamConfig, UpstreamProtocol, UpstreamTlsConfig, UpstreamTlsMode,
};

use env::Readable;
use locate::{NodeId, Position, SourceMap};

/// Reads, expands (from the process environment), parses and validates the
/// file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    parse(&read(path)?, &path.display().to_string())
}

/// Reads the file at `path`; the error has no position (line and column 0).
pub fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the configuration file: {error}"),
        }])
    })
}

/// Parses and validates `text`, expanding `${VAR}` from the process
/// environment; `file_name` only labels the errors.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    parse_with_env(text, file_name, &|name| std::env::var(name).ok())
}

/// Sections a document from a `config_source` must leave out: they say how
/// to reach the source, so they come from the local file.
const LOCAL_ONLY: [&str; 3] = ["consul", "etcd", "config_source"];

/// Gives `config` (from the `config_source`) the sections of the `local`
/// file that say how to reach the source (`LOCAL_ONLY`).
pub fn adopt_local_sections(config: &mut Config, local: &Config) {
    config.consul = local.consul.clone();
    config.etcd = local.etcd.clone();
    config.config_source = local.config_source.clone();
    for key in LOCAL_ONLY {
        config.from_env_as_in(local, key);
    }
}

/// Those of `paths` (dotted: `admin.listen`) whose key `text` writes.
pub fn keys_written<'a>(text: &str, paths: &[&'a str]) -> Vec<&'a str> {
    let source = SourceMap::build(text);
    (paths.iter().copied())
        .filter(|path| source.key_position(path).is_some())
        .collect()
}

/// Parses and validates a document read from the `config_source` (a Consul
/// KV value or an etcd key) as [`parse`] does; `name` labels the errors
/// (`consul-kv:KEY`, `etcd:KEY`). Also rejects `consul`, `etcd` and
/// `config_source` in it (`LOCAL_ONLY`), and every `${VAR}` whose variable
/// is not in `allowed_env` (the local file's `config_source.*.allowed_env`).
pub fn parse_from_source(
    text: &str,
    name: &str,
    allowed_env: &[String],
) -> Result<Config, ConfigErrors> {
    let source = SourceMap::build(text);
    let mut errors: Vec<ConfigError> = LOCAL_ONLY
        .iter()
        .filter_map(|key| {
            let position = source.key_position(key)?;
            Some(ConfigError {
                file: name.to_owned(),
                line: position.line,
                column: position.column,
                path: (*key).to_owned(),
                message: "comes from the local configuration file (--config), not from the \
                          config_source; remove it here"
                    .to_owned(),
            })
        })
        .collect();
    let process_env = |variable: &str| std::env::var(variable).ok();
    match parse_document(text, name, &process_env, Readable::Only(allowed_env)) {
        Ok(config) if errors.is_empty() => return Ok(config),
        Ok(_) => {}
        Err(more) => errors.extend(more.0),
    }
    errors.sort_by_key(|error| (error.line, error.column));
    Err(ConfigErrors(errors))
}

/// [`parse`] with `${VAR}` looked up through `env` instead of the process
/// environment.
pub fn parse_with_env(
    text: &str,
    file_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    parse_document(text, file_name, env, Readable::All)
}

/// [`parse_with_env`] reading only the `readable` variables.
fn parse_document(
    text: &str,
    file_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    readable: Readable<'_>,
) -> Result<Config, ConfigErrors> {
    let source = SourceMap::build(text);
    let error_at = |position: Position, path: String, message: String| ConfigError {
        file: file_name.to_owned(),
        line: position.line,
        column: position.column,
        path,
        message,
    };

    let (variables, unset) = env::resolve(text, &source.scalars, env, readable);
    let unset_values: Vec<NodeId> = unset.iter().map(|unset| unset.node).collect();
    let mut errors: Vec<ConfigError> = (unset.into_iter())
        .map(|unset| error_at(unset.position, unset.path, unset.message))
        .collect();

    let mut options = Options::default().with_properties(variables);
    options.property_syntax = PropertySyntax::DockerCompose;
    options.with_snippet = false;
    let deserialized = deserialize::deserialize(text, &source, &options, &unset_values);
    errors.extend(
        (deserialized.errors.into_iter())
            .map(|error| error_at(error.position, error.path, error.message)),
    );
    // With only unknown keys dropped the configuration is the file's own;
    // with a value dropped the checks would judge defaults nobody wrote.
    if let Some(config) = &deserialized.config
        && (errors.is_empty() || deserialized.only_unknown_keys)
    {
        errors.extend(validate::check(config).into_iter().map(|problem| {
            error_at(
                source.position_of(&problem.path),
                problem.path,
                problem.message,
            )
        }));
    }
    if let Some(mut config) = deserialized.config
        && errors.is_empty()
    {
        config.from_env = env::expanded_paths(&source.scalars);
        return Ok(config);
    }
    errors.sort_by_key(|error| (error.line, error.column));
    Err(ConfigErrors(errors))
}

#[cfg(test)]
mod tests;
