#![no_main]

// The checks live in fuzz/checks/substitute_syntax.rs so tests/e2e/security/fuzz_replay.rs can
// replay the checked-in corpus with the same code on stable.
include!("../checks/substitute_syntax.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| check(data));
