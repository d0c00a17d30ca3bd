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
# StreamJobs are what the operator reconciles: list/watch feed its controller (get is granted
# with them but not used by the operator today), patch adds and removes the finalizer (set only on jobs that ask for a
# final savepoint on deletion, so the savepoint is taken before the pods go).
- apiGroups: ["cairn.dev"]
  resources: ["streamjobs"]
  verbs: ["get", "list", "watch", "patch"]
# Status is the operator's write-ahead log (the savepoint and target spec are recorded before
# any worker is torn down) and what users read; written with server-side apply.
- apiGroups: ["cairn.dev"]
  resources: ["streamjobs/status"]
  verbs: ["get", "patch"]
# Children carry an owner reference with blockOwnerDeletion; where the
# OwnerReferencesPermissionEnforcement admission plugin is on, setting it requires update on
# the owner's finalizers subresource. No other update is granted.
- apiGroups: ["cairn.dev"]
  resources: ["streamjobs/finalizers"]
  verbs: ["update"]
# Each job's control-API token: created once by the operator (never re-applied: a running job's
# token must not change) and read back to authenticate its own calls to the job. list, watch,
# patch and delete are granted for cleanup of leftovers but not used by the operator today.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each job's ConfigMap (job spec and task assignment): applied, watched for drift, deleted when
# left over.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each job's headless Service (stable DNS names for the coordinator and the control API):
# applied, watched for drift, deleted when left over.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each job's worker StatefulSet: applied, watched for rollout and readiness, deleted to tear the
# workers down once a savepoint is recorded (upgrade, rescale, repartition, suspend).
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each job's PodDisruptionBudget, which keeps node drains from taking several workers at once:
# applied, watched for drift, deleted when left over.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Worker pods: read for phase and restart counts (status shows repeated failures); delete
# removes a pod stuck on an old revision during an upgrade (a StatefulSet never replaces it).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# Events on StreamJobs for every transition (events.k8s.io/v1). The operator creates one event
# per transition (never a series: a series keeps its first message); patch is not used today.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The same events through the core API, for clients and tools that only read core events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
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
