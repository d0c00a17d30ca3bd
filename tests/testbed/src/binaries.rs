//! Locating the control-plane binaries: `$KUBEBUILDER_ASSETS` (envtest's convention) first, then
//! the version-keyed cache that `tests/controlplane/build.sh` fills, building them with that
//! script when they are missing.
//!
//! The pinned versions are read at compile time from the wrapper modules' `go.mod` files, the
//! same single source `build.sh` reads, so the harness and the script can never disagree on a
//! cache directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

const KUBERNETES_GO_MOD: &str = include_str!("../../controlplane/kubernetes/go.mod");
const HELM_GO_MOD: &str = include_str!("../../controlplane/helm/go.mod");

/// Errors of locating or building the binaries.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    /// A wrapper `go.mod` does not require the module whose version names the cache directory.
    #[error("tests/controlplane/{file} does not require {module}; add `require {module} vX.Y.Z`")]
    NoPinnedVersion {
        /// The go.mod, relative to tests/controlplane.
        file: &'static str,
        /// The module path.
        module: &'static str,
    },
    /// The build script could not be started.
    #[error("cannot run {script}: {source}")]
    RunBuild {
        /// The script.
        script: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The build script failed; its stderr went to this process's stderr.
    #[error(
        "{script} {target} failed ({status}); its output is above. Run it by hand to retry; it \
         needs Go >= 1.26 and access to the Go module proxy (or a filled module cache)"
    )]
    BuildFailed {
        /// The script.
        script: PathBuf,
        /// `kubernetes` or `helm`.
        target: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The build script succeeded but a binary is not where it said.
    #[error(
        "{binary} is missing after {script} {target} succeeded; delete {dir} and run it again"
    )]
    Missing {
        /// The binary expected.
        binary: PathBuf,
        /// The directory the script printed.
        dir: PathBuf,
        /// The script.
        script: PathBuf,
        /// `kubernetes` or `helm`.
        target: &'static str,
    },
}

/// Paths of every binary the test bed runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneBinaries {
    /// etcd server.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kube-scheduler.
    pub kube_scheduler: PathBuf,
    /// kubectl.
    pub kubectl: PathBuf,
    /// helm (v3).
    pub helm: PathBuf,
}

/// The Kubernetes release the test bed builds, e.g. `v1.34.4`.
pub fn kubernetes_version() -> Result<&'static str, BinariesError> {
    required_version(KUBERNETES_GO_MOD, "k8s.io/kubernetes").ok_or(BinariesError::NoPinnedVersion {
        file: "kubernetes/go.mod",
        module: "k8s.io/kubernetes",
    })
}

/// The Helm release the test bed builds, e.g. `v3.22.0`.
pub fn helm_version() -> Result<&'static str, BinariesError> {
    required_version(HELM_GO_MOD, "helm.sh/helm/v3").ok_or(BinariesError::NoPinnedVersion {
        file: "helm/go.mod",
        module: "helm.sh/helm/v3",
    })
}

/// `tests/controlplane/build.sh` of this checkout.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../controlplane/build.sh")
}

/// `${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/bin`, where build.sh installs.
pub fn cache_bin_dir() -> PathBuf {
    let cache = std::env::var_os("CAIRN_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
            home.join(".cache/cairn")
        });
    cache.join("bin")
}

/// Finds every binary: each one from `$KUBEBUILDER_ASSETS` when that directory holds etcd and
/// kube-apiserver and the binary, else from the cache; runs `build.sh` (which can take many
/// minutes cold, and prints its progress to stderr) when something is missing. The result is
/// remembered for the rest of the process.
pub fn control_plane_binaries() -> Result<ControlPlaneBinaries, crate::TestbedError> {
    Ok(find()?)
}

fn find() -> Result<ControlPlaneBinaries, BinariesError> {
    static FOUND: Mutex<Option<ControlPlaneBinaries>> = Mutex::new(None);
    // Holding the lock while building makes the other tests of the binary wait for one build.
    let mut found = FOUND.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = found.as_ref() {
        return Ok(b.clone());
    }
    let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
    let bin = cache_bin_dir();
    let kube_dir = bin.join(format!("kubernetes-{}", kubernetes_version()?));
    let helm_dir = bin.join(format!("helm-{}", helm_version()?));
    let mut b = locate(assets.as_deref(), &kube_dir, &helm_dir);
    if !all_exist(&b) {
        let kube_dir = run_build("kubernetes")?;
        let helm_dir = run_build("helm")?;
        b = locate(assets.as_deref(), &kube_dir, &helm_dir);
        for (path, dir, target) in [
            (&b.etcd, &kube_dir, "kubernetes"),
            (&b.kube_apiserver, &kube_dir, "kubernetes"),
            (&b.kube_controller_manager, &kube_dir, "kubernetes"),
            (&b.kube_scheduler, &kube_dir, "kubernetes"),
            (&b.kubectl, &kube_dir, "kubernetes"),
            (&b.helm, &helm_dir, "helm"),
        ] {
            if !is_executable(path) {
                return Err(BinariesError::Missing {
                    binary: path.clone(),
                    dir: dir.clone(),
                    script: build_script(),
                    target,
                });
            }
        }
    }
    *found = Some(b.clone());
    Ok(b)
}

/// Picks each binary from the assets directory (only when it is a usable envtest directory)
/// or from the cache directories.
fn locate(assets: Option<&Path>, kube_dir: &Path, helm_dir: &Path) -> ControlPlaneBinaries {
    let assets = assets
        .filter(|d| is_executable(&d.join("etcd")) && is_executable(&d.join("kube-apiserver")));
    let pick = |name: &str, fallback: &Path| -> PathBuf {
        match assets {
            Some(d) if is_executable(&d.join(name)) => d.join(name),
            _ => fallback.join(name),
        }
    };
    ControlPlaneBinaries {
        etcd: pick("etcd", kube_dir),
        kube_apiserver: pick("kube-apiserver", kube_dir),
        kube_controller_manager: pick("kube-controller-manager", kube_dir),
        kube_scheduler: pick("kube-scheduler", kube_dir),
        kubectl: pick("kubectl", kube_dir),
        helm: pick("helm", helm_dir),
    }
}

fn all_exist(b: &ControlPlaneBinaries) -> bool {
    [
        &b.etcd,
        &b.kube_apiserver,
        &b.kube_controller_manager,
        &b.kube_scheduler,
        &b.kubectl,
        &b.helm,
    ]
    .iter()
    .all(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `build.sh <target>` with stderr passed through and returns the directory it printed on
/// its last stdout line.
fn run_build(target: &'static str) -> Result<PathBuf, BinariesError> {
    let script = build_script();
    eprintln!(
        "cairn-testbed: control-plane binaries missing; running {} {target}",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg(target)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| BinariesError::RunBuild {
            script: script.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(BinariesError::BuildFailed {
            script,
            target,
            status: out.status,
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(dir))
}

/// The version of `module` on its `require` line in a go.mod (single line or block form).
fn required_version(go_mod: &'static str, module: &str) -> Option<&'static str> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let mut first = words.next()?;
        if first == "require" {
            first = words.next()?;
        }
        let version = words.next()?;
        (first == module && version.starts_with('v')).then_some(version)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_are_read_from_the_wrapper_modules() {
        let k = kubernetes_version().unwrap();
        assert!(k.starts_with("v1.34."), "{k}");
        let h = helm_version().unwrap();
        assert!(h.starts_with("v3."), "{h}");
    }

    #[test]
    fn require_lines_in_both_forms_are_parsed_and_replaces_are_not() {
        let go_mod = "module x\n\nrequire a.io/b v1.2.3\n\nrequire (\n\tc.io/d v0.1.0 // indirect\n)\n\nreplace (\n\te.io/f => e.io/f v9.9.9\n)\n";
        assert_eq!(required_version(go_mod, "a.io/b"), Some("v1.2.3"));
        assert_eq!(required_version(go_mod, "c.io/d"), Some("v0.1.0"));
        assert_eq!(required_version(go_mod, "e.io/f"), None);
    }

    #[test]
    fn assets_are_used_only_when_they_hold_etcd_and_the_api_server() {
        let root =
            std::env::temp_dir().join(format!("cairn-testbed-assets-{}", std::process::id()));
        let assets = root.join("assets");
        std::fs::create_dir_all(&assets).unwrap();
        let make_exe = |name: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = assets.join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let cache = root.join("cache");
        make_exe("etcd");
        make_exe("kubectl");
        // Without kube-apiserver the directory is not an envtest directory: ignored entirely.
        let b = locate(Some(&assets), &cache, &cache);
        assert_eq!(b.etcd, cache.join("etcd"));
        assert_eq!(b.kubectl, cache.join("kubectl"));
        make_exe("kube-apiserver");
        let b = locate(Some(&assets), &cache, &cache);
        assert_eq!(b.etcd, assets.join("etcd"));
        assert_eq!(b.kube_apiserver, assets.join("kube-apiserver"));
        assert_eq!(b.kubectl, assets.join("kubectl"));
        assert_eq!(b.kube_scheduler, cache.join("kube-scheduler"));
        assert_eq!(b.helm, cache.join("helm"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
