//! The Consul health-list parser (`GET /v1/health/service/:name` bodies)
//! and the rules that turn entries into weighted instances, on arbitrary
//! bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::consul::health::ServiceEntry;
use remora::discovery::consul::instances;

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
    let passing = instances(&entries, true);
    let all = instances(&entries, false);
    assert!(passing.len() <= all.len());
    assert!(all.iter().all(|instance| instance.weight >= 1));
    assert!(all.windows(2).all(|pair| pair[0].addr < pair[1].addr));
});
