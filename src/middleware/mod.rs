//! The tower middleware of the data path, one module each; `stack` composes them.

pub mod authorization;
pub mod circuit_breaker;
pub mod concurrency;
pub mod error_response;
pub mod fault;
pub mod jwt;
pub mod normalize_path;
pub mod observe;
pub mod rate_limit;
pub mod request_token;
pub mod retry;
pub mod timeout;
pub mod trace_context;
