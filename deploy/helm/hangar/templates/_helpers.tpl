{{/* Names and labels. Every object carries app.kubernetes.io/name=hangar and the release's
instance label: the replicas' NetworkPolicy admits control-plane pods by them. */}}
{{- define "hangar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "hangar" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (.Values.nameOverride | default "hangar") | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hangar.selectorLabels" -}}
app.kubernetes.io/name: hangar
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hangar.labels" -}}
{{ include "hangar.selectorLabels" . }}
app.kubernetes.io/part-of: hangar
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "hangar.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "hangar.fullname" .) -}}
{{- end -}}

{{- define "hangar.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The non-secret settings (console/settings/*) of every control-plane process. */}}
{{- define "hangar.config" -}}
DJANGO_SETTINGS_MODULE: console.settings.production
{{- $hosts := list }}
{{- if .Values.ingress.enabled }}{{ $hosts = append $hosts .Values.ingress.host }}{{ end }}
{{- $hosts = concat $hosts .Values.web.allowedHosts }}
HANGAR_ALLOWED_HOSTS: {{ join "," $hosts | quote }}
{{- if .Values.ingress.enabled }}
HANGAR_CSRF_TRUSTED_ORIGINS: {{ printf "https://%s" .Values.ingress.host | quote }}
{{- end }}
HANGAR_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
HANGAR_MODEL_ROOTS: {{ .Values.models.mountPath | quote }}
HANGAR_RUNTIME_IMAGE: {{ .Values.config.runtimeImage | quote }}
HANGAR_INSTANCE: {{ .Values.instance | default .Release.Name | quote }}
HANGAR_WEB_WORKERS: {{ .Values.web.processes | quote }}
{{- /* Redis down: each gateway process admits 1/N of every limit (share), N at the most pods. */}}
HANGAR_GATEWAY_REDIS_DOWN_POLICY: {{ .Values.web.redisDownPolicy | quote }}
HANGAR_GATEWAY_PROCESSES: {{ mul (ternary .Values.autoscaling.maxReplicas .Values.web.replicas .Values.autoscaling.enabled) .Values.web.processes | quote }}
HANGAR_FORWARDED_ALLOW_IPS: {{ .Values.web.forwardedAllowIps | quote }}
HANGAR_WORKER_CONCURRENCY: {{ .Values.worker.concurrency | quote }}
HANGAR_WORKER_HEARTBEAT_FILE: /tmp/hangar-worker-alive
HANGAR_BEAT_LEASE_SECONDS: {{ .Values.beat.leaseSeconds | quote }}
{{- range $name, $value := .Values.config.extra }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Settings that come from the bundled databases: they win over the Secret's (env over envFrom). */}}
{{- define "hangar.databaseEnv" -}}
{{- if .Values.postgresql.enabled }}
# Expanded by the kubelet from POSTGRES_PASSWORD in the Secret (a URL-safe value).
- name: DATABASE_URL
  value: {{ printf "postgres://hangar:$(POSTGRES_PASSWORD)@%s-postgresql:5432/hangar" (include "hangar.fullname" .) | quote }}
{{- end }}
{{- if .Values.redis.enabled }}
# Expanded by the kubelet from REDIS_PASSWORD in the Secret (URL-safe): the bundled Redis's ACL user.
- name: REDIS_URL
  value: {{ printf "redis://hangar:$(REDIS_PASSWORD)@%s-redis:6379/0" (include "hangar.fullname" .) | quote }}
{{- end }}
{{- end -}}

{{- define "hangar.envFrom" -}}
- configMapRef:
    name: {{ include "hangar.fullname" . }}
- secretRef:
    name: {{ .Values.secrets.existingSecret }}
{{- end -}}

{{- define "hangar.podSpecCommon" -}}
serviceAccountName: {{ include "hangar.serviceAccountName" . }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* /tmp and /var/lib/hangar are scratch (the root filesystem is read-only); models from models.*. */}}
{{- define "hangar.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
- name: models
  {{- if .Values.models.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.models.existingClaim }}
    readOnly: {{ .Values.models.readOnly }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end -}}

{{- define "hangar.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/hangar
- name: models
  mountPath: {{ .Values.models.mountPath }}
  readOnly: {{ .Values.models.readOnly }}
{{- end -}}

{{- define "hangar.configChecksum" -}}
checksum/config: {{ include "hangar.config" . | sha256sum }}
{{- end -}}
