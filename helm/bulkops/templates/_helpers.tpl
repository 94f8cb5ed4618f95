{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "bulkops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "bulkops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bulkops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bulkops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bulkops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bulkops.labels" -}}
helm.sh/chart: {{ include "bulkops.chart" . }}
{{ include "bulkops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "bulkops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bulkops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bulkops.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding BULKOPS_AMQP_URL and target credentials: existingSecret or the chart's. */}}
{{- define "bulkops.secretName" -}}
{{- default (include "bulkops.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Env var prefix of one target: BULKOPS_TARGETS__<NAME>__ (NAME upper-cased). */}}
{{- define "bulkops.targetPrefix" -}}
{{- printf "BULKOPS_TARGETS__%s__" (upper .) }}
{{- end }}

{{/* Secret keys of one target's credentials, by kind, as a YAML map key -> values field.
     One block per kind of the worker's catalog (tests/unit/test_chart_catalog.py checks). */}}
{{- define "bulkops.targetSecretFields" -}}
{{- if eq .kind "datocms" }}
API_TOKEN: apiToken
{{- else if eq .kind "bloomreach" }}
API_KEY_ID: apiKeyId
API_SECRET: apiSecret
{{- else }}
{{- fail (printf "unknown target kind %q" .kind) }}
{{- end }}
{{- end }}

{{/* Seconds Kubernetes grants a pod to stop: computed from, or checked against, the drain timeout. */}}
{{- define "bulkops.terminationGracePeriodSeconds" -}}
{{- $drain := ceil .Values.drainTimeoutSeconds | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drain .Values.terminationGracePeriodMarginSeconds }}
{{- else }}
{{- $grace := .Values.terminationGracePeriodSeconds | int }}
{{- if lt $grace (add $drain 10) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed drainTimeoutSeconds (%v) by at least 10 s, or the worker is killed mid-drain" $grace .Values.drainTimeoutSeconds) }}
{{- end }}
{{- $grace }}
{{- end }}
{{- end }}

{{/* PromQL matchers selecting this release's worker series. */}}
{{- define "bulkops.promSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q, job=%q" .Release.Namespace (include "bulkops.fullname" .) }}
{{- end }}
{{- end }}

{{/* PromQL matchers selecting the broker's series for one queue (passed as .queue). */}}
{{- define "bulkops.rabbitSelector" -}}
{{- $sel := printf "queue=%q" .queue }}
{{- with .root.Values.prometheusRule.rabbitmq.selector }}
{{- $sel = printf "%s, %s" $sel . }}
{{- end }}
{{- $sel }}
{{- end }}

{{/* Fails rendering on settings the worker would refuse at start. */}}
{{- define "bulkops.validate" -}}
{{- $replicas := ternary .Values.keda.maxReplicaCount .Values.replicaCount .Values.keda.enabled }}
{{- if and (gt (int $replicas) 1) (eq (int .Values.config.partitions) 0) }}
{{- fail "more than one replica needs config.partitions > 0: each replica would otherwise use the whole rate limit, and two replicas could reorder operations on one id (README: Scaling out)" }}
{{- end }}
{{- if and (not .Values.existingSecret) (not .Values.secrets.amqpUrl) }}
{{- fail "set secrets.amqpUrl (the chart then creates the Secret) or existingSecret (a Secret you manage with key BULKOPS_AMQP_URL)" }}
{{- end }}
{{- range $name, $t := .Values.targets }}
{{- if and (eq $t.kind "bloomreach") (not $t.baseUrl) }}
{{- fail (printf "targets.%s: bloomreach targets need baseUrl" $name) }}
{{- end }}
{{- if and (eq $t.kind "bloomreach") (not $t.projectId) }}
{{- fail (printf "targets.%s: bloomreach targets need projectId" $name) }}
{{- end }}
{{- if not $.Values.existingSecret }}
{{- range $key, $field := include "bulkops.targetSecretFields" $t | fromYaml }}
{{- if not (get $t $field) }}
{{- fail (printf "targets.%s.%s is required (or use existingSecret)" $name $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
