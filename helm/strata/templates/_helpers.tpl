{{- define "strata.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "strata.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "strata.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "strata.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "strata.s3Secret" -}}
{{- if .Values.objstore.s3.existingSecret -}}
{{ .Values.objstore.s3.existingSecret }}
{{- else -}}
{{ include "strata.fullname" . }}-s3
{{- end -}}
{{- end -}}

{{/* --objstore.* flags, the same for every component. */}}
{{- define "strata.objstoreArgs" -}}
{{- if eq .Values.objstore.type "s3" }}
- --objstore.type=s3
- --objstore.s3.bucket={{ required "objstore.s3.bucket is required" .Values.objstore.s3.bucket }}
{{- with .Values.objstore.s3.endpoint }}
- --objstore.s3.endpoint={{ . }}
{{- end }}
- --objstore.s3.region={{ .Values.objstore.s3.region }}
{{- with .Values.objstore.s3.prefix }}
- --objstore.s3.prefix={{ . }}
{{- end }}
- --objstore.s3.virtual-hosted-style={{ .Values.objstore.s3.virtualHostedStyle }}
{{- else if eq .Values.objstore.type "filesystem" }}
- --objstore.type=filesystem
- --objstore.path={{ .Values.objstore.filesystem.path }}
{{- else }}
{{- fail "objstore.type must be s3 or filesystem" }}
{{- end }}
{{- end -}}

{{/* Env (S3 credentials) and volume mounts that go with the objstore flags. */}}
{{- define "strata.objstoreEnv" -}}
{{- if and (eq .Values.objstore.type "s3") (or .Values.objstore.s3.existingSecret .Values.objstore.s3.accessKeyId) }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ include "strata.s3Secret" . }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "strata.s3Secret" . }}, key: AWS_SECRET_ACCESS_KEY}}
{{- end }}
{{- end -}}

{{- define "strata.objstoreMount" -}}
{{- if eq .Values.objstore.type "filesystem" }}
- name: objstore
  mountPath: {{ .Values.objstore.filesystem.path }}
{{- end }}
{{- end -}}

{{- define "strata.objstoreVolume" -}}
{{- if eq .Values.objstore.type "filesystem" }}
- name: objstore
  persistentVolumeClaim:
    claimName: {{ required "objstore.filesystem.existingClaim (a ReadWriteMany PVC) is required with objstore.type=filesystem" .Values.objstore.filesystem.existingClaim }}
{{- end }}
{{- end -}}

{{/* Whether the chart renders the web config Secret. */}}
{{- define "strata.webConfigRendered" -}}
{{- if or (and .Values.auth.enabled (not .Values.auth.existingSecret)) (and (not .Values.auth.enabled) .Values.tls.enabled .Values.tls.http) -}}
true
{{- end -}}
{{- end -}}

{{/* Whether the servers get --web.config.file. */}}
{{- define "strata.webConfigUsed" -}}
{{- if or .Values.auth.enabled (and .Values.tls.enabled .Values.tls.http) -}}
true
{{- end -}}
{{- end -}}

{{- define "strata.webConfigSecret" -}}
{{- if and .Values.auth.enabled .Values.auth.existingSecret -}}
{{ .Values.auth.existingSecret }}
{{- else -}}
{{ include "strata.fullname" . }}-web-config
{{- end -}}
{{- end -}}

{{- define "strata.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}
{{ .Values.tls.existingSecret }}
{{- else if .Values.tls.certManager.enabled -}}
{{ include "strata.fullname" . }}-tls
{{- else -}}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret with ca.crt) or tls.certManager.enabled" -}}
{{- end -}}
{{- end -}}

{{/* Checks of the auth and TLS values (included once, by the ingester). */}}
{{- define "strata.checkSecurity" -}}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) (not .Values.auth.basicAuthUsers) (not .Values.auth.tenants) -}}
{{- fail "auth.enabled: give auth.existingSecret (a Secret with web.yml) or auth.basicAuthUsers/auth.tenants (docs/security.md), or set auth.enabled=false" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled .Values.auth.enabled (not .Values.auth.scrapeSecret) -}}
{{- fail "serviceMonitor.enabled with auth.enabled needs auth.scrapeSecret (a Secret with username and password of a user with the read role)" -}}
{{- end -}}
{{- if .Values.tls.enabled }}{{ $_ := include "strata.tlsSecret" . }}{{ end -}}
{{- end -}}

{{/* --web.config.file for every HTTP server. */}}
{{- define "strata.webArgs" -}}
{{- if include "strata.webConfigUsed" . }}
- --web.config.file=/etc/strata/web/web.yml
{{- end }}
{{- end -}}

{{/* The gRPC listener's TLS (ingesters and stores): mutual. */}}
{{- define "strata.grpcServerArgs" -}}
{{- if .Values.tls.enabled }}
- --grpc.tls-cert-file=/etc/strata/tls/tls.crt
- --grpc.tls-key-file=/etc/strata/tls/tls.key
- --grpc.tls-client-ca-file=/etc/strata/tls/ca.crt
{{- end }}
{{- end -}}

{{/* gRPC clients' TLS (ingesters to peers, queriers to ingesters and stores). */}}
{{- define "strata.grpcClientArgs" -}}
{{- if .Values.tls.enabled }}
- --grpc-client.tls-ca-file=/etc/strata/tls/ca.crt
- --grpc-client.tls-cert-file=/etc/strata/tls/tls.crt
- --grpc-client.tls-key-file=/etc/strata/tls/tls.key
{{- end }}
{{- end -}}

{{- define "strata.securityMounts" -}}
{{- if include "strata.webConfigUsed" . }}
- {name: web-config, mountPath: /etc/strata/web, readOnly: true}
{{- end }}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/strata/tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "strata.securityVolumes" -}}
{{- if include "strata.webConfigUsed" . }}
- name: web-config
  secret: {secretName: {{ include "strata.webConfigSecret" . }}}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret: {secretName: {{ include "strata.tlsSecret" . }}}
{{- end }}
{{- end -}}

{{/* Probe scheme: HTTPS when the HTTP ports serve TLS. */}}
{{- define "strata.probeScheme" -}}
{{- if and .Values.tls.enabled .Values.tls.http }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}

{{/* host:port of every memcached replica, comma-separated (the StatefulSet's stable names). */}}
{{- define "strata.memcachedAddresses" -}}
{{- $fullname := include "strata.fullname" . -}}
{{- $out := list -}}
{{- range $i := until (int .Values.memcached.replicas) -}}
{{- $out = append $out (printf "%s-memcached-%d.%s-memcached.%s.svc:11211" $fullname $i $fullname $.Release.Namespace) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/*
Range query splitting and the results cache (the querier's built-in
frontend, or strata query-frontend).
*/}}
{{- define "strata.frontendArgs" -}}
- --query.split-interval={{ .Values.querier.splitInterval }}
- --query.cache-freshness={{ .Values.querier.cacheFreshness }}
- --query.results-cache.ttl={{ .Values.querier.resultsCache.ttl }}
{{- if .Values.memcached.enabled }}
# The results cache in memcached, shared by every querier (or frontend).
- --query.results-cache.memcached.addresses={{ include "strata.memcachedAddresses" . }}
- --query.results-cache.memcached.timeout={{ .Values.memcached.timeout }}
{{- else }}
- --query.results-cache.max-bytes={{ .Values.querier.resultsCache.maxBytes }}
{{- end }}
{{- end }}
