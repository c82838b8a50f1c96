//! The tower middleware of the data path, one module each; `stack` composes them.

pub mod circuit_breaker;
pub mod error_response;
pub mod observe;
pub mod retry;
pub mod timeout;
