{{/*
Names, labels and images shared by every template, plus the checks of value combinations the
schema cannot express.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "cairn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: fullnameOverride, else the release name when it already contains
the chart name ("cairn" -> "cairn"), else "<release>-<chart>". Truncated to 38 characters so
that with the longest suffix ("-operator-leader-election", 25 characters) every name still fits
the 63-character limit of DNS labels and label values.
*/}}
{{- define "cairn.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 38 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 38 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 38 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "name-version" of the chart, for the helm.sh/chart label. */}}
{{- define "cairn.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "cairn.labels" -}}
helm.sh/chart: {{ include "cairn.chart" . }}
app.kubernetes.io/name: {{ include "cairn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cairn
{{- end }}

{{/* Labels on every object that belongs to the operator (not to a worker). */}}
{{- define "cairn.operatorLabels" -}}
{{ include "cairn.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels that select the operator pods (Deployment, Service, PDB, NetworkPolicy). */}}
{{- define "cairn.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "cairn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "cairn.operatorServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "cairn.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name the existing ServiceAccount the operator should run as" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "cairn.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The default worker image reference handed to the operator. */}}
{{- define "cairn.workerImage" -}}
{{- printf "%s:%s" .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) }}
{{- end }}

{{/*
Namespaces that get a worker ServiceAccount (and, with networkPolicy.enabled, the worker
NetworkPolicy): the release namespace and every watched namespace, each once. When every
namespace is watched the chart cannot know them all: other namespaces need their own.
*/}}
{{- define "cairn.workerNamespaces" -}}
{{- uniq (prepend .Values.watchNamespaces .Release.Namespace) | toJson }}
{{- end }}

{{/*
Ports of worker pods, fixed by the operator's StatefulSet builder; used by the NetworkPolicy.
*/}}
{{- define "cairn.workerControlPort" -}}9250{{- end }}
{{- define "cairn.workerCoordinatorPort" -}}7000{{- end }}
{{- define "cairn.workerMetricsPort" -}}9249{{- end }}

{{/* Value combinations the schema cannot reject, each with the fix. */}}
{{- define "cairn.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: several operators would reconcile the same StreamJobs at once. Set leaderElection.enabled=true, or replicaCount=1" (int .Values.replicaCount)) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be less than replicaCount (%d), or no node could ever be drained. Lower podDisruptionBudget.minAvailable" (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) }}
{{- end }}
{{- $chartLabels := include "cairn.labels" . | fromYaml }}
{{- range $key, $value := .Values.podLabels }}
{{- if or (hasKey $chartLabels $key) (eq $key "app.kubernetes.io/component") }}
{{- fail (printf "podLabels.%s: the chart sets this label itself (the Deployment selects its pods by it); remove it from podLabels" $key) }}
{{- end }}
{{- end }}
{{- end }}
