//! Step 4: make the children match the build, with server-side apply and owner references. The
//! token Secret is only created (never re-applied: a running job's token must not change); the
//! StatefulSets (workers, standbys) are deleted and recreated between specs, never rolled; a
//! standbys' set the deployment does not want (`standby` turned off) is deleted.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::fetch::Fetched;
use super::{Context, Error, MANAGER};
use crate::children::{self, job_pods_string, Children, Owner};
use crate::crd::Deployment;
use crate::pods::PodDocument;

/// Applies every child of `deployment` (whose recorded pod document is `job`); without workers,
/// removes the StatefulSets and PDB.
pub async fn children(
    job: &PodDocument,
    deployment: &Deployment,
    owner: &Owner,
    fetched: &Fetched,
    with_workers: bool,
    ctx: &Context,
) -> Result<(), Error> {
    let Children {
        secret,
        config_map,
        service,
        stateful_set,
        standby_set,
        pdb,
    } = children::render(job, deployment, owner, &fetched.token, with_workers);
    if !fetched.token_exists {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(Error::kube("creating the token Secret")(e)),
        }
    }
    apply(ctx, &owner.namespace, &config_map).await?;
    apply(ctx, &owner.namespace, &service).await?;
    match (stateful_set, pdb) {
        (Some(sts), Some(pdb)) => {
            apply(ctx, &owner.namespace, &pdb).await?;
            apply(ctx, &owner.namespace, &sts).await?;
        }
        _ => {
            // Leftovers of a job that no longer runs pods.
            delete::<PodDisruptionBudget>(ctx, &owner.namespace, &owner.name, false).await?;
            delete::<StatefulSet>(ctx, &owner.namespace, &owner.name, true).await?;
        }
    }
    let standby_name = owner.standby_set_name();
    match standby_set {
        Some(set) => apply(ctx, &owner.namespace, &set).await.map_err(|e| {
            // Most likely a StreamJob called like the set holds that name for its workers.
            e.naming_the_standby_set(&standby_name, fetched.observed.workers.standby_set)
        })?,
        // Standbys turned off, or no pods at all: a set found by fetch goes (a set that does not
        // exist costs no call).
        None if fetched.observed.workers.standby_set => {
            delete::<StatefulSet>(ctx, &owner.namespace, &standby_name, true).await?
        }
        None => {}
    }
    Ok(())
}

/// Creates the housekeeping Job of `run`; one that exists already (an earlier reconcile created
/// it) is left as it is.
pub async fn run_housekeeping(
    owner: &Owner,
    run: children::housekeeping::Run<'_>,
    ctx: &Context,
) -> Result<(), Error> {
    let job = children::housekeeping_job(owner, run);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    match api.create(&PostParams::default(), &job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("creating Job {}", run.name))(e)),
    }
}

/// Deletes housekeeping Job `name` and its pod (background propagation).
pub async fn delete_housekeeping(owner: &Owner, name: &str, ctx: &Context) -> Result<(), Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting Job {name}"))(e)),
    }
}

/// Deletes the StatefulSets (foreground: their pods go first), the standbys' one if fetch found
/// it, and any pod of either left over.
pub async fn delete_workers(owner: &Owner, fetched: &Fetched, ctx: &Context) -> Result<(), Error> {
    delete::<StatefulSet>(ctx, &owner.namespace, &owner.name, true).await?;
    if fetched.observed.workers.standby_set {
        delete::<StatefulSet>(ctx, &owner.namespace, &owner.standby_set_name(), true).await?;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let params = ListParams::default().labels(&job_pods_string(&owner.name));
    for pod in pods
        .list(&params)
        .await
        .map_err(Error::kube("listing worker pods"))?
    {
        if pod.metadata.deletion_timestamp.is_none() {
            delete::<Pod>(ctx, &owner.namespace, &pod.name_any(), false).await?;
        }
    }
    Ok(())
}

async fn apply<K>(ctx: &Context, namespace: &str, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(object).expect("a child serialises");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(Error::kube(format!("applying {} {name}", K::kind(&()))))?;
    Ok(())
}

async fn delete<K>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    foreground: bool,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let params = if foreground {
        DeleteParams::foreground()
    } else {
        DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting {} {name}", K::kind(&())))(e)),
    }
}
