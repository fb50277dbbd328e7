#![no_main]
#[path = "../harness/noise.rs"]
mod harness;
libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::handshake(data));
