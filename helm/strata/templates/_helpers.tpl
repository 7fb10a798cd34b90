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
