//! `cairn-bench wasm`: the keyed count as WebAssembly components (C, JavaScript, Python; built
//! by examples/wasm/build.sh) next to the built-in native `count`, same generator, same job, in
//! the same run. The components are loaded and compiled before the clock starts (as a restarted
//! worker finds them in its compile cache), so the times are of processing, start-up of the
//! task instances and the final checkpoint, as for the native task.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_contract::JobSpec;
use cairn_worker::task::TaskRegistry;

use crate::{drop_caches, run_spec};

/// The components of examples/wasm, built (or found built) by its script.
fn components() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/build.sh");
    let out = Command::new(&script)
        .output()
        .expect("run examples/wasm/build.sh");
    assert!(
        out.status.success(),
        "examples/wasm/build.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 path");
    PathBuf::from(stdout.lines().last().expect("the output directory").trim())
}

/// The count job of the `count` benchmark with `task` (YAML flow text).
fn job(keys: u64, records: u64, task: &str) -> JobSpec {
    let yaml = format!(
        "name: bench-wasm\ninput: {{type: generator, partitions: 4, keys: {keys}, seed: 1, recordsPerPartition: {}}}\n\
         task: {task}\noutput: {{type: \"null\"}}\nparallelism: 2\n\
         checkpoint: {{interval: 10s, store: \"file://./ckpt\", retained: 3}}\nstate: {{dir: ./state, cacheSize: 256MiB}}\n",
        records / 4
    );
    JobSpec::from_yaml_str(&yaml).expect("a valid benchmark job")
}

/// Runs `spec` in a fresh directory; records per second.
fn rate(scratch: &Path, name: &str, spec: JobSpec, registry: &TaskRegistry, records: u64) -> f64 {
    let dir = scratch.join(format!("wasm-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Load (and compile) the component outside the measured run: the registry keeps it.
    registry
        .build_task(&spec.task)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    drop_caches();
    let (elapsed, _) = run_spec(spec, registry.clone(), &dir);
    let _ = std::fs::remove_dir_all(&dir);
    records as f64 / elapsed.as_secs_f64()
}

pub fn wasm(scratch: &Path, keys: u64, records: u64, interpreted_records: u64) {
    let dir = components();
    let registry = TaskRegistry::with_builtins();
    let native = rate(
        scratch,
        "native",
        job(keys, records, "{name: count}"),
        &registry,
        records,
    );
    println!(
        "\n### keyed count as a WebAssembly component, {keys} keys, 4 partitions, 2 containers\n"
    );
    println!("| task | language | records | records/s | vs native |");
    println!("|---|---|---|---|---|");
    println!("| built-in `count` | Rust, native | {records} | {native:.0} | 100% |");
    for (file, language, n) in [
        ("count-c.wasm", "C (clang -O2), compiled", records),
        (
            "count-js.wasm",
            "JavaScript (componentize-js), interpreted",
            interpreted_records,
        ),
        (
            "count-python.wasm",
            "Python (componentize-py), interpreted",
            interpreted_records,
        ),
    ] {
        let module = dir.join(file);
        let task = format!("{{wasm: {{module: \"{}\"}}}}", module.display());
        let r = rate(scratch, file, job(keys, n, &task), &registry, n);
        println!(
            "| `{file}` | {language} | {n} | {r:.0} | {:.1}% |",
            100.0 * r / native
        );
    }
}
