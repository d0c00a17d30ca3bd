//! Prints what the native prerequisites built; see Cargo.toml.
#![allow(non_camel_case_types, dead_code)]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

extern "C" {
    fn cairn_probe_cxx_sum() -> u64;
}

fn main() {
    let probe = cairn_probe_t {
        records: 1,
        partitions: 4,
        committed: true,
    };
    assert_eq!(probe.partitions, 4);
    // SAFETY: returns a pointer to a static NUL-terminated buffer, or null.
    let versions = unsafe { cairn_probe_versions() };
    assert!(!versions.is_null(), "SSL_CTX_new failed");
    let versions = unsafe { std::ffi::CStr::from_ptr(versions) };
    // SAFETY: a C++ function with no arguments that returns a plain integer.
    let sum = unsafe { cairn_probe_cxx_sum() };
    assert_eq!(sum, 10, "the C++20 probe summed 1..=4 to {sum}");
    println!(
        "probe: bindgen generated bindings with libclang; C built against {}; C++20 with threads",
        versions.to_string_lossy()
    );
}
