use std::path::PathBuf;

fn main() {
    // Run on every check, even when nothing here changed: check.sh sets a new value each time.
    println!("cargo:rerun-if-env-changed=CAIRN_FRESH_MACHINE_RUN");
    println!("cargo:rerun-if-changed=probe.h");
    println!("cargo:rerun-if-changed=probe.c");
    println!("cargo:rerun-if-changed=probe.cc");

    // As librocksdb-sys: bindgen with the runtime feature finds and loads libclang.so when it
    // generates; a machine without it panics here with "Unable to find libclang".
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    bindgen::Builder::default()
        .header("probe.h")
        .allowlist_type("cairn_probe_t")
        .allowlist_function("cairn_probe_versions")
        .generate()
        .expect("bindgen could not generate bindings for probe.h (librocksdb-sys would fail the same way)")
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs");

    // As rdkafka-sys (features ssl, libz): OpenSSL found the way openssl-sys finds it on Linux,
    // with pkg-config (libz-sys tries it first too), then C against both headers, linked with
    // the libraries pkg-config names.
    let mut c = cc::Build::new();
    for lib in ["openssl", "zlib"] {
        let found = pkg_config::Config::new().probe(lib).unwrap_or_else(|e| {
            panic!("pkg-config cannot find {lib} (openssl-sys would fail the same way): {e}")
        });
        c.includes(found.include_paths);
    }
    c.file("probe.c").compile("cairnprobe");

    // As librocksdb-sys compiles RocksDB: C++20 with g++ (the cc crate's default C++ compiler),
    // linked with libstdc++.
    cc::Build::new()
        .cpp(true)
        .flag("-std=c++20")
        .flag("-include")
        .flag("cstdint")
        .file("probe.cc")
        .compile("cairnprobecxx");
}
