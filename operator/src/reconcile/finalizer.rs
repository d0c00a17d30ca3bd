//! The final-savepoint finalizer: the reconcile's only writes to the StreamJob's metadata. Kept
//! out of fetch (which only reads) so every write of a reconcile is in status, apply or here.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::{Context, Error, FINALIZER};
use crate::crd::StreamJob;

/// Whether the final-savepoint finalizer is on the object.
pub fn has_finalizer(sj: &StreamJob) -> bool {
    sj.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds or removes the final-savepoint finalizer to match the spec.
pub async fn sync_finalizer(
    sj: &StreamJob,
    namespace: &str,
    wanted: bool,
    ctx: &Context,
) -> Result<(), Error> {
    if has_finalizer(sj) == wanted {
        return Ok(());
    }
    let mut list: Vec<String> = sj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if wanted {
        list.push(FINALIZER.into());
    }
    patch_finalizers(sj, namespace, list, ctx).await
}

/// Removes the finalizer so deletion proceeds. An object already gone has no finalizer left:
/// that is success, not an error. It happens when a reconcile runs on a cached copy of a
/// StreamJob whose finalizer an earlier reconcile released (that reconcile's status write queued
/// this one), so the API server has deleted it meanwhile.
pub async fn release_finalizer(
    sj: &StreamJob,
    namespace: &str,
    ctx: &Context,
) -> Result<(), Error> {
    match sync_finalizer(sj, namespace, false, ctx).await {
        Err(Error::Kube {
            source: kube::Error::Api(e),
            ..
        }) if e.code == 404 && sj.metadata.deletion_timestamp.is_some() => Ok(()),
        other => other,
    }
}

async fn patch_finalizers(
    sj: &StreamJob,
    namespace: &str,
    list: Vec<String>,
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), namespace);
    // A compare-and-swap on the finalizers alone: finalizers another controller changed
    // meanwhile make the `test` fail (and the reconcile retry), while this reconcile's own
    // status write (which changed the object's resourceVersion) does not.
    let current = sj.finalizers();
    let ops = if current.is_empty() {
        serde_json::json!([{"op": "add", "path": "/metadata/finalizers", "value": list}])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": list}
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("a well-formed JSON patch");
    api.patch(
        &sj.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(Error::kube("updating finalizers"))?;
    Ok(())
}
