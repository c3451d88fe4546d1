{{/* Chart name, at most 63 characters. */}}
{{- define "audit-stream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources, at most 63 characters (DNS label). The release
name alone when it already contains the chart name.
*/}}
{{- define "audit-stream.fullname" -}}
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

{{- define "audit-stream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "audit-stream.labels" -}}
helm.sh/chart: {{ include "audit-stream.chart" . }}
{{ include "audit-stream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: audit-stream
{{- end }}

{{- define "audit-stream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "audit-stream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "audit-stream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "audit-stream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "audit-stream.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "audit-stream.recipesConfigMap" -}}
{{- .Values.recipes.existingConfigMap | default (printf "%s-recipes" (include "audit-stream.fullname" .)) }}
{{- end }}

{{/* Paths inside the container. */}}
{{- define "audit-stream.configDir" -}}/etc/audit-stream/config{{- end }}
{{- define "audit-stream.recipesDir" -}}/etc/audit-stream/recipes{{- end }}
{{- define "audit-stream.dataDir" -}}/var/lib/audit-stream{{- end }}
{{- define "audit-stream.scyllaTlsDir" -}}/etc/audit-stream/scylla-tls{{- end }}

{{/*
audit-stream.toml from .Values.config: one table per section, nested maps (the
librdkafka properties) as sub-tables with quoted keys. Values are written with toJson,
whose strings, numbers and booleans are valid TOML. The chart owns http.listen,
recipes.path and store.embedded_path.
*/}}
{{- define "audit-stream.configToml" -}}
# Rendered by the audit-stream Helm chart from its `config` values.
{{- range $section, $values := .Values.config }}

[{{ $section }}]
{{- range $key, $value := $values }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- if and (eq $section "recipes") $.Values.recipes.enabled }}
path = {{ printf "%s/%s" (include "audit-stream.recipesDir" $) $.Values.recipes.key | toJson }}
{{- end }}
{{- if eq $section "store" }}
embedded_path = {{ printf "%s/audit-stream.db" (include "audit-stream.dataDir" $) | toJson }}
{{- end }}
{{- range $key, $value := $values }}
{{- if and (kindIs "map" $value) $value }}

[{{ $section }}.{{ $key }}]
{{- range $property, $setting := $value }}
{{ toJson $property }} = {{ toJson $setting }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

[http]
listen = {{ printf "0.0.0.0:%v" .Values.containerPort | toJson }}
{{- end }}

{{/* Environment shared by the service and the migrate init container. */}}
{{- define "audit-stream.env" -}}
- name: AUDIT_STREAM_CONFIG
  value: {{ printf "%s/audit-stream.toml" (include "audit-stream.configDir" .) }}
- name: AUDIT_STREAM_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- with .Values.kafkaSecrets.sasl }}
{{- if .existingSecret }}
- name: AUDIT_STREAM__KAFKA__PROPERTIES__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
- name: AUDIT_STREAM__KAFKA__PROPERTIES__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- if eq .Values.config.store.kind "scylla" }}
{{- with .Values.scylla }}
- name: AUDIT_STREAM__STORE__SCYLLA__NODES
  value: {{ .nodes | toJson | quote }}
- name: AUDIT_STREAM__STORE__SCYLLA__KEYSPACE
  value: {{ .keyspace | quote }}
- name: AUDIT_STREAM__STORE__SCYLLA__REPLICATION
  value: {{ .replication | quote }}
{{- if .auth.existingSecret }}
- name: AUDIT_STREAM__STORE__SCYLLA__USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .auth.existingSecret }}
      key: {{ .auth.usernameKey }}
- name: AUDIT_STREAM__STORE__SCYLLA__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .auth.existingSecret }}
      key: {{ .auth.passwordKey }}
{{- end }}
{{- if .tls.enabled }}
- name: AUDIT_STREAM__STORE__SCYLLA__TLS_CA_FILE
  value: {{ printf "%s/%s" (include "audit-stream.scyllaTlsDir" $) .tls.caKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts shared by the service and the migrate init container. */}}
{{- define "audit-stream.volumeMounts" -}}
- name: config
  mountPath: {{ include "audit-stream.configDir" . }}
  readOnly: true
{{- if .Values.recipes.enabled }}
- name: recipes
  mountPath: {{ include "audit-stream.recipesDir" . }}
  readOnly: true
{{- end }}
- name: data
  mountPath: {{ include "audit-stream.dataDir" . }}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafkaSecrets.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ .Values.kafkaSecrets.tls.mountPath }}
  readOnly: true
{{- end }}
{{- if and (eq .Values.config.store.kind "scylla") .Values.scylla.tls.enabled }}
- name: scylla-tls
  mountPath: {{ include "audit-stream.scyllaTlsDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Combinations the schema cannot express; fails the render with the reason. */}}
{{- define "audit-stream.validate" -}}
{{- $embedded := eq .Values.config.store.kind "embedded" }}
{{- if and $embedded (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "config.store.kind \"embedded\" is one SQLite file per pod and supports one replica: use config.store.kind \"scylla\" for replicaCount > 1 or autoscaling" }}
{{- end }}
{{- if and (not $embedded) (empty .Values.scylla.nodes) }}
{{- fail "config.store.kind \"scylla\" needs scylla.nodes" }}
{{- end }}
{{- if and (not $embedded) .Values.scylla.tls.enabled (empty .Values.scylla.tls.existingSecret) }}
{{- fail "scylla.tls.enabled needs scylla.tls.existingSecret" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage)) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
