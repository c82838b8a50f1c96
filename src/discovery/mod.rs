//! Where upstream endpoints come from. `static` lists are applied once when
//! the upstream is built (see `app.rs`); `consul` and `dns` run watches that
//! update upstreams' endpoint sets, failing static.

pub mod consul;
pub mod dns;
