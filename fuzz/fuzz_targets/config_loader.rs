//! libFuzzer entry point around [`webhook_exporter_fuzz::config_loader`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webhook_exporter_fuzz::config_loader(data));
