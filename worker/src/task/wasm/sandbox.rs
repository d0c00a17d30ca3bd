//! The wasmtime engine every component task of a process shares: Cranelift, the component
//! model, epoch interruption (a ticker thread, so a deadline costs a counter check per loop
//! and call instead of fuel accounting on every instruction), and a cache of compiled
//! components on disk (a Python component takes tens of seconds to compile; a restarted worker
//! must not pay that again).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{
    Component, ComponentNamedList, HasSelf, Instance, InstancePre, Lift, Linker, Lower, TypedFunc,
};
use wasmtime::{Config, Engine, Store};

use super::bindings::BatchTask;
use super::host::HostData;

/// How often the engine's epoch advances: the resolution of `maxCallTime`.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The process's engine, with its epoch ticker started.
pub(super) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("the engine's fixed configuration is valid");
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                ticking.increment_epoch();
            })
            .expect("a thread can be started");
        engine
    })
}

/// Epoch ticks in `max_call_time` (at least one).
pub(super) fn deadline_ticks(max_call_time: Duration) -> u64 {
    (max_call_time.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Where compiled components are kept: `$CAIRN_WASM_CACHE` (on Kubernetes, the pod's state
/// volume), else `$HOME/.cache/cairn/wasm-compiled`; none when neither can be told (compiling
/// then happens at every start).
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(cairn_contract::pod::env::WASM_CACHE) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/cairn/wasm-compiled"))
}

/// Compiled components kept in the cache; older ones are removed when a new one is added (each
/// is about twice its module's size: 35 MiB for a Python component).
const CACHE_ENTRIES: usize = 8;

/// Compiles `bytes`, or loads the result of an earlier compile of the same bytes by the same
/// wasmtime with the same settings.
pub(super) fn compile(bytes: &[u8]) -> wasmtime::Result<Component> {
    let engine = engine();
    let Some(dir) = cache_dir() else {
        return Component::new(engine, bytes);
    };
    // The content hash names the entry: the same name is the same module, so a cache entry can
    // never run another module's code. wasmtime refuses an entry compiled by another version or
    // with other settings (and it is then compiled again).
    let path = dir.join(format!("{:x}.cwasm", Sha256::digest(bytes)));
    if path.exists() {
        // SAFETY: the file is one this worker serialized (below) into its own cache directory,
        // named by the hash of the module it was compiled from; deserialize checks that it was
        // made by this wasmtime with compatible settings. A cache directory others can write to
        // would let them run code in this process: the default one is under the worker's HOME.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compiling again: the cached component cannot be used")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store_compiled(&component, &dir, &path) {
        tracing::warn!(dir = %dir.display(), error = %e, "the compiled component is not cached; it will be compiled again at the next start");
    }
    Ok(component)
}

/// Writes a compiled component under `path` (a temporary file renamed into place, so a reader
/// never sees half of one).
fn store_compiled(
    component: &Component,
    dir: &std::path::Path,
    path: &std::path::Path,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("c")
    ));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)?;
    prune(dir, path);
    Ok(())
}

/// Removes all but the newest [`CACHE_ENTRIES`] compiled components of `dir` (never `kept`).
fn prune(dir: &std::path::Path, kept: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut compiled: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm") && p != kept)
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    compiled.sort();
    let excess = (compiled.len() + 1).saturating_sub(CACHE_ENTRIES);
    for (_, old) in compiled.into_iter().take(excess) {
        let _ = std::fs::remove_file(old);
    }
}

/// Links a component against the host: the `cairn:task` imports and WASI 0.2 (with nothing of
/// the machine granted; see `HostData::new`). A component importing anything else is refused
/// here, naming the import.
pub(super) fn link(component: &Component) -> wasmtime::Result<InstancePre<HostData>> {
    let mut linker = Linker::<HostData>::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    BatchTask::add_to_linker::<HostData, HasSelf<HostData>>(&mut linker, |data| data)?;
    super::host::link_per_record_imports(&mut linker)?;
    linker.instantiate_pre(component)
}

/// The export `name` as a typed function; `None` if the component does not export it, an error
/// if it exports it with another type.
pub(super) fn typed<P, R>(
    instance: &Instance,
    store: &mut Store<HostData>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, String>
where
    P: ComponentNamedList + Lower,
    R: ComponentNamedList + Lift,
{
    let Some(func) = instance.get_func(&mut *store, name) else {
        return Ok(None);
    };
    func.typed::<P, R>(&*store)
        .map(Some)
        .map_err(|e| format!("its export has another type than wit/task.wit says: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_whole_ticks_and_never_zero() {
        assert_eq!(deadline_ticks(Duration::from_secs(10)), 1000);
        assert_eq!(deadline_ticks(Duration::from_millis(15)), 1);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 1);
    }

    #[test]
    fn the_cache_keeps_the_newest_entries_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        for i in 0..CACHE_ENTRIES + 3 {
            let path = dir.path().join(format!("{i:02}.cwasm"));
            std::fs::write(&path, b"x").unwrap();
            // Entry i was written i seconds after the oldest.
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(old + Duration::from_secs(i as u64))
                .unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"not an entry").unwrap();
        let kept = dir.path().join("00.cwasm");
        prune(dir.path(), &kept);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        // The entry just written (kept, whatever its time) and the 7 newest others.
        let mut expected: Vec<String> = (CACHE_ENTRIES + 3 - 7..CACHE_ENTRIES + 3)
            .map(|i| format!("{i:02}.cwasm"))
            .collect();
        expected.insert(0, "00.cwasm".to_owned());
        expected.push("notes.txt".to_owned());
        expected.sort();
        assert_eq!(left, expected);
    }
}
