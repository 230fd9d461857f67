{{/*
Names and labels shared by every template of the chart.
*/}}

{{/* The chart's name, overridable with nameOverride. */}}
{{- define "influence-trace-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name of the release's objects: fullnameOverride, else "<release>" when the release name
already contains the chart name, else "<release>-<chart>"; at most 63 characters (a DNS label).
*/}}
{{- define "influence-trace-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "influence-trace-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator pod; never change between upgrades. */}}
{{- define "influence-trace-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "influence-trace-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object of the release. */}}
{{- define "influence-trace-operator.labels" -}}
helm.sh/chart: {{ include "influence-trace-operator.chart" . }}
{{ include "influence-trace-operator.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The operator's ServiceAccount: created (the full name unless named) or an existing one. */}}
{{- define "influence-trace-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "influence-trace-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The pool-table ConfigMap's name. */}}
{{- define "influence-trace-operator.poolsName" -}}
{{- printf "%s-pools" (include "influence-trace-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "repository:tag" of an image block; the tag defaults to the chart's appVersion. */}}
{{- define "influence-trace-operator.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/*
The RBAC rules the operator needs: exactly the API calls of influence_trace_operator.adapters.kube.Kube and
kopf's watches (kopf's cluster scanning is disabled, so no CRD or Namespace access). Used by the
ClusterRole (all namespaces) or by the Role in each watched namespace.
*/}}
{{- define "influence-trace-operator.rules" -}}
# Traces: kopf lists and watches them; each reconcile pass reads the trace it works on.
- apiGroups: ["influencetrace.dev"]
  resources: ["influencetraces"]
  verbs: ["get", "list", "watch"]
# The operator's only write to a trace: PUT of the status subresource (never the spec).
- apiGroups: ["influencetrace.dev"]
  resources: ["influencetraces/status"]
  verbs: ["update"]
{{- if .Values.rbac.ownerReferencesPermissionEnforcement }}
# Children carry blockOwnerDeletion: true, which OwnerReferencesPermissionEnforcement checks as this.
- apiGroups: ["influencetrace.dev"]
  resources: ["influencetraces/finalizers"]
  verbs: ["update"]
{{- end }}
# One worker Job per attempt: create, read back (adoption after a restart), watched by kopf, deleted
# (foreground) when the trace fails, is cancelled, or its attempt waited past pendingTimeout.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Worker pods: listed by job-name label to classify an attempt, watched by kopf (Running, evictions).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# The running worker's progress lines (status.progress): the tail of its log.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# The manifest ConfigMap each trace's pods mount, and the headless rendezvous Service of a
# multi-node trace: created once, garbage-collected with the trace. On a name clash (409) the
# existing one is read and, when this trace (or a deleted namesake) owns it with other content,
# replaced, so a re-created trace never runs an old manifest.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "create", "update"]
# A multi-node trace's NetworkPolicy: only its own pods reach rank 0's rendezvous port (networkPolicy).
{{- if .Values.networkPolicy }}
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "update"]
{{- end }}
# spec.storage.volumeClaim is checked before a Job is made (VolumeClaimMissing); read only.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# Events on traces (the operator's and kopf's own warnings).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.kueue.enabled }}
# Kueue: the Workload of a queued Job, listed by Kueue's job-uid label (why it waits, its flavor,
# Kueue's evictions). Jobs are created suspended by the operator; only Kueue unsuspends them.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list"]
{{- end }}
{{- end -}}
