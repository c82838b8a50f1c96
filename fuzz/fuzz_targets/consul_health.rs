//! The Consul health-list parser (`GET /v1/health/service/:name` bodies)
//! and the rules that turn entries into endpoints, on arbitrary bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::consul::health::{ServiceEntry, endpoints};

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = serde_json::from_slice::<Vec<ServiceEntry>>(data) else {
        return;
    };
    for entry in &entries {
        let _ = entry.health();
        if let Some(endpoint) = entry.endpoint() {
            assert_ne!(endpoint.port(), 0);
        }
    }
    let passing = endpoints(&entries, true);
    let all = endpoints(&entries, false);
    assert!(passing.len() <= all.len());
});
