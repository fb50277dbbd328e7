#![no_main]
#[path = "../harness/repo.rs"]
mod harness;
libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::pack_file(data));
