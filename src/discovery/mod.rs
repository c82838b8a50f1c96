//! Endpoint discovery sources that run beside the data path (static lists need none).

pub mod dns;
