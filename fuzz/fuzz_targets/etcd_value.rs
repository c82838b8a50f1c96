//! The etcd instance value parser (JSON or go-kit's `host:port`, what
//! discovery reads under `<etcd.prefix><service>/`), on arbitrary values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::etcd::value::InstanceValue;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = InstanceValue::parse(data) else {
        return;
    };
    if let Ok(addr) = value.socket_addr() {
        assert_ne!(addr.port(), 0);
        assert_eq!(addr.port(), value.port);
    }
    // What remora registers reads back as itself.
    let written = serde_json::to_vec(&value).expect("serializes");
    assert_eq!(InstanceValue::parse(&written), Ok(value));
});
