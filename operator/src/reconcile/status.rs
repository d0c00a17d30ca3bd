//! Step 5, the writing half: the status (server-side apply on `/status`, skipped when nothing
//! changed) and events.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error, MANAGER};
use crate::crd::{StreamJob, StreamJobStatus};
use crate::lifecycle::Note;

/// Writes `next` unless it equals `current`.
pub async fn write(
    sj: &StreamJob,
    namespace: &str,
    current: &StreamJobStatus,
    next: &StreamJobStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if next == current {
        return Ok(());
    }
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": StreamJob::api_version(&()),
        "kind": StreamJob::kind(&()),
        "status": next,
    });
    api.patch_status(
        &sj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube("writing status"))?;
    Ok(())
}

/// Publishes an event on the StreamJob; failures are logged, never fatal.
pub async fn publish(sj: &StreamJob, note: &Note, ctx: &Context) {
    let event = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.into(),
        note: Some(note.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if note.warning {
        tracing::warn!(job = %sj.name_any(), reason = note.reason, message = %note.message);
    } else {
        tracing::info!(job = %sj.name_any(), reason = note.reason, message = %note.message);
    }
    // A fresh recorder per event: kube's recorder turns a second event with the same reason
    // into a series of the first one, keeping the first one's note, so a second "savepoint
    // taken" would show the first savepoint's URL. Our events are transitions, few per job.
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&event, &sj.object_ref(&())).await {
        tracing::warn!(job = %sj.name_any(), error = %e, "cannot publish event");
    }
}
