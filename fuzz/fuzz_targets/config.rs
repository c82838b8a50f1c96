//! The configuration loader on arbitrary text: YAML parsing, `${VAR}`
//! expansion, key-path location and validation must return `Ok` or errors,
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Every variable is set (to a value that is itself YAML-ish), so
    // expansion paths run too.
    let env = |name: &str| (name.len() % 2 == 0).then(|| "1s".to_owned());
    if let Err(errors) = remora::config::parse_with_env(text, "fuzz.yaml", &env) {
        // Formatting the errors walks the positions too.
        let _ = errors.to_string();
    }
});
