#![no_main]
#[path = "../harness/wire.rs"]
mod harness;
libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::repair_ticket(data));
