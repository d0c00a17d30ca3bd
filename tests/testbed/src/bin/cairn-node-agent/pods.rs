//! The watch on this node's pods (`spec.nodeName=<node>`, bound by the real scheduler) and one
//! worker task per pod UID. A worker that panics is logged and forgotten; it never stops the
//! agent or the other pods. Pods that vanished while the watch was down are noticed on the
//! relist and stopped.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::pod::{self, Msg, Shared};

struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    join: JoinHandle<()>,
}

/// Runs until `shutdown` turns true, then stops every pod (processes and network namespaces;
/// the pod objects stay) and returns.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let mut events = watcher::watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut listing: Option<HashSet<String>> = None;
    let mut first_list = true;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                finished.insert(uid);
            }
            event = events.next() => match event {
                None => break,
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                Some(Ok(Event::Init)) => listing = Some(HashSet::new()),
                Some(Ok(Event::InitApply(p))) => {
                    if let (Some(set), Some(uid)) = (listing.as_mut(), p.metadata.uid.clone()) {
                        set.insert(uid);
                    }
                    dispatch(&shared, &mut workers, &finished, &done_tx, p);
                }
                Some(Ok(Event::InitDone)) => {
                    let live = listing.take().unwrap_or_default();
                    for (uid, handle) in &workers {
                        if !live.contains(uid) {
                            let _ = handle.tx.send(Msg::Gone);
                        }
                    }
                    if first_list {
                        first_list = false;
                        remove_stale_pod_dirs(&shared.config.root_dir, &live);
                    }
                }
                Some(Ok(Event::Apply(p))) => dispatch(&shared, &mut workers, &finished, &done_tx, p),
                Some(Ok(Event::Delete(p))) => {
                    if let Some(handle) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                        let _ = handle.tx.send(Msg::Gone);
                    }
                }
            }
        }
    }
    tracing::info!(pods = workers.len(), "stopping every pod");
    for handle in workers.values() {
        let _ = handle.tx.send(Msg::Shutdown);
    }
    for (_, handle) in workers {
        let _ = handle.join.await;
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, Handle>,
    finished: &HashSet<String>,
    done: &mpsc::UnboundedSender<String>,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(handle) = workers.get(&uid) {
        let _ = handle.tx.send(Msg::Update(Box::new(pod)));
        return;
    }
    if finished.contains(&uid) {
        return;
    }
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    tracing::info!(pod = %name, %uid, "new pod");
    let (tx, rx) = mpsc::unbounded_channel();
    let worker_tx = tx.clone();
    let shared = shared.clone();
    let done = done.clone();
    let key = uid.clone();
    let join = tokio::spawn(async move {
        let result = std::panic::AssertUnwindSafe(pod::run(shared, pod, worker_tx, rx))
            .catch_unwind()
            .await;
        if result.is_err() {
            tracing::error!(pod = %name, "pod worker panicked; the pod is abandoned (its processes may still run)");
        }
        let _ = done.send(key);
    });
    workers.insert(uid, Handle { tx, join });
}

/// Removes the volumes of pods that no longer exist (deleted while no agent ran); their logs
/// stay for post-mortems.
fn remove_stale_pod_dirs(root: &Path, live: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let uid = std::fs::read_to_string(entry.path().join("uid")).unwrap_or_default();
        if !uid.is_empty() && !live.contains(&uid) {
            for sub in ["volumes", "cwd"] {
                let dir = entry.path().join(sub);
                if dir.exists() {
                    tracing::info!(dir = %dir.display(), "removing what a pod that is gone left");
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
}
