{{/*
The operator's RBAC rules, least privilege, each preceded by a comment saying why it is needed
(operator/tests/chart.rs fails when a rule has none). Children and status are written with
server-side apply, which is authorised as "patch" (plus "create" when the apply creates the
object), so no rule in a job namespace grants "update" on an object, and none grants
"deletecollection" or "*".
*/}}

{{/*
Rules in every namespace whose StreamJobs the operator manages. Used unchanged by the
ClusterRole (all namespaces) and by the Role of each of watchNamespaces, so both modes grant
exactly the same access.
*/}}
{{- define "cairn.jobRules" -}}
# StreamJobs are what the operator reconciles: list/watch feed its controller, patch adds and
# removes the finalizer (set only on jobs that ask for a final savepoint on deletion, so the
# savepoint is taken before the pods go).
- apiGroups: ["cairn.dev"]
  resources: ["streamjobs"]
  verbs: ["list", "watch", "patch"]
# Status is the operator's write-ahead log (the savepoint and target spec are recorded before
# any worker is torn down) and what users read; written with server-side apply.
- apiGroups: ["cairn.dev"]
  resources: ["streamjobs/status"]
  verbs: ["patch"]
# Children carry an owner reference with blockOwnerDeletion; where the
# OwnerReferencesPermissionEnforcement admission plugin is on, setting it requires update on
# the owner's finalizers subresource. No other update is granted.
- apiGroups: ["cairn.dev"]
  resources: ["streamjobs/finalizers"]
  verbs: ["update"]
# Each job's control-API token: created once by the operator (never re-applied: a running job's
# token must not change) and read back to authenticate its own calls to the job. The Secret
# goes with its StreamJob through the owner reference.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# Each job's ConfigMap (job spec and task assignment) and headless Service (stable DNS names
# for the coordinator and the control API): applied on every reconcile, which puts back any
# drift; they go with their StreamJob through the owner reference.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["create", "patch"]
# Each job's StatefulSets (its workers, and with standby: true its warm standbys): listed by the
# job's label on each reconcile and watched (they trigger reconciles), applied, and deleted to
# tear the pods down once a savepoint is recorded (upgrade, rescale, repartition, suspend) or
# when standbys are turned off.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Each job's PodDisruptionBudget, which keeps node drains from taking several workers at once:
# applied, and deleted with the workers.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch", "delete"]
# Worker pods: listed and watched for phase and restart counts (status shows repeated
# failures); delete removes a pod stuck on an old revision during an upgrade (a StatefulSet
# never replaces it). A housekeeping Job's pod is listed for its termination message.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
# Housekeeping pods: one-off Jobs that run `cairn-worker store` with a job's own image,
# credentials and volumes, to dispose of pruned savepoints, purge a deleted job's store
# (deletion.checkpointData: delete) and check an upgrade's restorability before the running job
# is stopped; read back for their outcome and deleted once it is seen.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "delete"]
# Events on StreamJobs for every transition (events.k8s.io/v1; core-API readers see them too).
# One event per transition, never a series, so no patch.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Rules in the release namespace for leader election (only with leaderElection.enabled).
*/}}
{{- define "cairn.leaseRules" -}}
# Leader election: create the Lease the first time. A create request is authorised before the
# object has a name, so this rule cannot be narrowed with resourceNames.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
# Leader election: read, renew and take over the operator's own Lease, and no other.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: ["cairn-operator"]
  verbs: ["get", "update", "patch"]
{{- end }}
