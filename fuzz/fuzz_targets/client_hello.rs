//! The ClientHello reader of the transparent egress policy
//! (`remora::transparent::client_hello::parse`) on arbitrary first bytes of
//! a connection: never a panic; what does not start a TLS handshake record
//! is `NotTls` and nothing else is; a server name is lower case, not empty
//! and without a trailing dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::transparent::client_hello::{ClientHello, parse};

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    // A handshake record of TLS 1.x, or a prefix of its first two bytes.
    const HANDSHAKE: [u8; 2] = [0x16, 0x03];
    let could_be_tls = data.starts_with(&HANDSHAKE) || HANDSHAKE.starts_with(data);
    assert_eq!(
        parsed == Some(ClientHello::NotTls),
        !could_be_tls,
        "{data:?} → {parsed:?}"
    );
    if let Some(ClientHello::ServerName(name)) = &parsed {
        assert_eq!(*name, name.to_ascii_lowercase());
        assert!(!name.ends_with('.'), "{name}");
        assert!(!name.is_empty());
    }
});
