//! Prints what the native prerequisites built; see Cargo.toml.
#![allow(non_camel_case_types, dead_code)]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

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
    println!(
        "probe: bindgen generated bindings with libclang; C built against {}",
        versions.to_string_lossy()
    );
}
