{{/*
Derived from KubeRay's ray-cluster chart (Apache-2.0; see NOTICE and LICENSE.kuberay).
*/}}

{{/* Expand the name of the chart. */}}
{{- define "ray-cluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The RayCluster's name. fullnameOverride wins; with nameOverride set, KubeRay's rule
(<release>-<name>, or the release when it contains the name); else the release name,
as ack-ray-cluster names it.
*/}}
{{- define "ray-cluster.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if .Values.nameOverride -}}
{{- if contains .Values.nameOverride .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- else -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Create chart name and version as used by the chart label. */}}
{{- define "ray-cluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels */}}
{{- define "ray-cluster.labels" -}}
helm.sh/chart: {{ include "ray-cluster.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* "true" when GCS fault tolerance is on (KubeRay's `enabled` or ack's `enable`). */}}
{{- define "ray-cluster.ft" -}}
{{- if or .Values.gcsFaultTolerance.enabled .Values.gcsFaultTolerance.enable -}}true{{- end -}}
{{- end -}}

{{/* "true" for ack-ray-cluster's form: fault tolerance on, no redisAddress given. */}}
{{- define "ray-cluster.ftSecret" -}}
{{- if and (include "ray-cluster.ft" .) (not .Values.gcsFaultTolerance.redisAddress) -}}true{{- end -}}
{{- end -}}

{{/* The Redis Secret of ack-ray-cluster's form. */}}
{{- define "ray-cluster.redisSecret" -}}
{{- default (printf "%s-raycluster-redis" .Release.Name) .Values.gcsFaultTolerance.secretName -}}
{{- end -}}

{{/* "true" when monitoring is on (`monitoring.enabled` or ack's `armsPrometheus.enable`). */}}
{{- define "ray-cluster.monitoring" -}}
{{- if or .Values.monitoring.enabled .Values.armsPrometheus.enable -}}true{{- end -}}
{{- end -}}

{{/* "true" when a pod's labels (.labels) carry one of elasticNodes.podLabels. */}}
{{- define "ray-cluster.elastic" -}}
{{- $labels := .labels | default dict -}}
{{- range $k, $v := .root.Values.elasticNodes.podLabels -}}
{{- if and (hasKey $labels $k) (eq (toString (get $labels $k)) (toString $v)) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* A group's rayStartParams (and KubeRay's deprecated initArgs), plus the metrics
port when monitoring is on and the ack-form Redis password on the head. */}}
{{- define "ray-cluster.rayStartParams" -}}
{{- $params := merge (dict) (.v.rayStartParams | default dict) (.v.initArgs | default dict) -}}
{{- if and (include "ray-cluster.monitoring" .root) .root.Values.monitoring.port -}}
{{- $_ := set $params "metrics-export-port" (toString .root.Values.monitoring.port) -}}
{{- end -}}
{{- if and .head (include "ray-cluster.ftSecret" .root) -}}
{{- $_ := set $params "redis-password" "$REDIS_PASSWORD" -}}
{{- end -}}
{{- if $params }}
rayStartParams:
  {{- range $key, $val := $params }}
  {{ $key }}: {{ $val | quote }}
  {{- end }}
{{- else }}
rayStartParams: {}
{{- end }}
{{- end -}}

{{/*
A Ray pod's template (KubeRay's, one definition for the head and every worker group).
Arguments: root (the chart's context), v (the group's values), container (its name),
head (true for the head).
*/}}
{{- define "ray-cluster.podTemplate" -}}
{{- $root := .root -}}
{{- $v := .v -}}
{{- $elastic := include "ray-cluster.elastic" (dict "labels" $v.labels "root" $root) -}}
{{- $annotations := $v.annotations | default dict -}}
{{- if include "ray-cluster.monitoring" $root -}}
{{- $annotations = merge (dict) $annotations (dict "prometheus.io/scrape" "true" "prometheus.io/path" "/metrics") -}}
{{- if $root.Values.monitoring.port -}}
{{- $annotations = merge $annotations (dict "prometheus.io/port" (toString $root.Values.monitoring.port)) -}}
{{- end -}}
{{- end -}}
{{- $env := concat ($root.Values.common.containerEnv | default list) ($v.containerEnv | default list) -}}
{{- if and .head (include "ray-cluster.ftSecret" $root) -}}
{{- $secret := include "ray-cluster.redisSecret" $root -}}
{{- $env = concat $env (list
      (dict "name" "RAY_REDIS_ADDRESS" "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" "address")))
      (dict "name" "REDIS_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" "password")))) -}}
{{- end -}}
{{- $nodeSelector := $v.nodeSelector | default dict -}}
{{- $tolerations := $v.tolerations | default list -}}
{{- if $elastic -}}
{{- $nodeSelector = merge (dict) $nodeSelector ($root.Values.elasticNodes.nodeSelector | default dict) -}}
{{- $tolerations = concat $tolerations ($root.Values.elasticNodes.tolerations | default list) -}}
{{- end -}}
metadata:
  labels:
    {{- include "ray-cluster.labels" $root | nindent 4 }}
  {{- range $k, $val := $v.labels }}
    {{ $k }}: {{ $val | toString | quote }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $v.initContainers }}
  initContainers:
  {{- toYaml . | nindent 2 }}
  {{- end }}
  containers:
  - name: {{ .container }}
    {{- if $v.image }}
    image: {{ $v.image.repository }}:{{ $v.image.tag }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    {{- else }}
    image: {{ $root.Values.image.repository }}:{{ $root.Values.image.tag }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    {{- end }}
    {{- with $v.command }}
    command:
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.args }}
    args:
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $env }}
    env:
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.envFrom }}
    envFrom:
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.volumeMounts }}
    volumeMounts:
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.ports }}
    ports:
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- else }}
    resources:
      limits:
        cpu: "1"
        memory: "1Gi"
      requests:
        cpu: "1"
        memory: "1Gi"
    {{- end }}
    {{- with $v.lifecycle }}
    lifecycle:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $v.securityContext }}
    securityContext:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- with $v.sidecarContainers }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $v.volumes }}
  volumes:
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $v.dnsConfig }}
  dnsConfig:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.priority }}
  priority: {{ . }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $v.restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  {{- with $v.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $v.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  {{- with $v.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.resourceClaims }}
  resourceClaims:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* A worker group (arguments: root, name, v). */}}
{{- define "ray-cluster.workerGroup" -}}
- groupName: {{ .name }}
  replicas: {{ .v.replicas | default 0 }}
  minReplicas: {{ .v.minReplicas | default 0 }}
  maxReplicas: {{ .v.maxReplicas | default 2147483647 }}
  numOfHosts: {{ .v.numOfHosts | default 1 }}
  {{- include "ray-cluster.rayStartParams" (dict "root" .root "v" .v "head" false) | trim | nindent 2 }}
  template:
    {{- include "ray-cluster.podTemplate" (dict "root" .root "v" .v "container" "ray-worker" "head" false) | nindent 4 }}
{{- end -}}
