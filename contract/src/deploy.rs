//! The document a deployment's worker pods run: the StreamJob's job plus how that deployment
//! starts. The operator writes it into the job's ConfigMap and records its
//! [`spec_hash`](crate::JobSpec::spec_hash); the worker parses the same document and reports the
//! same hash in its status, which is how the operator knows which deployment is running. One
//! function, so the two hashes cannot be computed from different documents.

use crate::{JobSpec, RestoreSpec};

/// How the pods of one deployment start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    /// Savepoint URL restored until the job commits a checkpoint of its own.
    pub savepoint: Option<String>,
    /// Stateless (re)starts so far: the store gets `/epoch-<n>` for n > 0, so a job restarted
    /// without state never reads the checkpoints of the one before.
    pub state_epoch: u32,
}

/// The worker document of `job` started as `start`. `first` is the StreamJob's `restoreFrom`:
/// its offset reset applies only while the deployment starts from that very savepoint (the
/// first one), its permission to drop state whenever a deployment starts from a savepoint.
pub fn worker_document(job: &JobSpec, first: &RestoreSpec, start: &Start) -> JobSpec {
    let mut spec = job.clone();
    if start.state_epoch > 0 {
        let store = spec.checkpoint.store.trim_end_matches('/');
        spec.checkpoint.store = format!("{store}/epoch-{}", start.state_epoch);
    }
    let initial = start.savepoint.is_some() && start.savepoint == first.savepoint;
    spec.restore = RestoreSpec {
        savepoint: start.savepoint.clone(),
        reset_offsets: initial && first.reset_offsets,
        allow_state_drop: start.savepoint.is_some() && first.allow_state_drop,
    };
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobSpec {
        JobSpec::from_yaml_str(
            "name: count\ninput: {type: generator, partitions: 2}\ntask: {name: count}\n\
             checkpoint: {store: 's3://bucket/count/'}\nrestore: {savepoint: s3://bucket/old}\n",
        )
        .unwrap()
    }

    #[test]
    fn the_first_savepoint_resets_offsets_and_a_stateless_restart_moves_the_store() {
        let first = RestoreSpec {
            savepoint: Some("s3://bucket/sp-1".into()),
            reset_offsets: true,
            allow_state_drop: true,
        };
        let from_first = Start {
            savepoint: first.savepoint.clone(),
            state_epoch: 0,
        };
        let doc = worker_document(&job(), &first, &from_first);
        assert_eq!(doc.restore, first);
        assert_eq!(doc.checkpoint.store, "s3://bucket/count/");

        let later = Start {
            savepoint: Some("s3://bucket/sp-2".into()),
            state_epoch: 2,
        };
        let doc = worker_document(&job(), &first, &later);
        assert_eq!(doc.checkpoint.store, "s3://bucket/count/epoch-2");
        assert_eq!(
            doc.restore,
            RestoreSpec {
                savepoint: later.savepoint.clone(),
                reset_offsets: false,
                allow_state_drop: true,
            }
        );

        // No savepoint: the spec's own restore section is replaced, not kept.
        let doc = worker_document(&job(), &first, &Start::default());
        assert!(doc.restore.is_default());
        // The hash the operator records is the hash of the document the worker parses.
        let reparsed = JobSpec::from_yaml_str(&doc.to_yaml()).unwrap();
        assert_eq!(reparsed.spec_hash(), doc.spec_hash());
    }
}
