//! Where upstream endpoints come from. `static` lists are applied once when
//! the upstream is built (see `app.rs`); `consul` runs the watches of
//! [`consul`]. DNS discovery is not implemented yet.

pub mod consul;
