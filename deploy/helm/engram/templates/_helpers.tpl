{{/* Names and labels shared by every template. */}}

{{- define "engram.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "engram.fullname" -}}
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

{{- define "engram.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "engram.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "engram.selector" -}}
app.kubernetes.io/name: {{ include "engram.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "engram.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "engram.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "engram.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "engram.databaseSecret" -}}
{{- default (printf "%s-database" (include "engram.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "engram.apiKeySecret" -}}
{{- default (printf "%s-api-key" (include "engram.fullname" .)) .Values.apiKey.existingSecret -}}
{{- end -}}

{{/* Engram's settings file: the `config` values plus what the pods need. */}}
{{- define "engram.configYaml" -}}
{{- $fixed := dict "host" "0.0.0.0" "port" (int .Values.api.port) "data_dir" "/var/lib/engram" -}}
{{- $_ := set $fixed "metrics" (dict "port" (int .Values.api.metricsPort)) -}}
{{- if .Values.tls.existingSecret -}}
{{- $_ := set $fixed "tls" (dict "certfile" "/etc/engram-tls/tls.crt" "keyfile" "/etc/engram-tls/tls.key") -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite (dict) (deepCopy .Values.config) $fixed) -}}
{{- end -}}

{{/* Environment shared by the API, worker and migration containers. */}}
{{- define "engram.env" -}}
- name: ENGRAM_CONFIG
  value: /etc/engram/config.yaml
- name: ENGRAM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "engram.apiKeySecret" . }}
      key: {{ .Values.apiKey.key }}
- name: HOME
  value: /tmp
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "engram.volumeMounts" -}}
- name: config
  mountPath: /etc/engram
  readOnly: true
- name: data
  mountPath: /var/lib/engram
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.existingSecret }}
- name: api-tls
  mountPath: /etc/engram-tls
  readOnly: true
{{- end }}
{{- if .Values.database.caSecret }}
- name: db-ca
  mountPath: /etc/engram-db-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "engram.volumes" -}}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if .Values.tls.existingSecret }}
- name: api-tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440  # readable by the pod's fsGroup
{{- end }}
{{- if .Values.database.caSecret }}
- name: db-ca
  secret:
    secretName: {{ .Values.database.caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if .Values.localKeys.existingSecret }}
- name: local-keys
  secret:
    secretName: {{ .Values.localKeys.existingSecret }}
    defaultMode: 0440  # readable by the pod's fsGroup
    items:
      - key: {{ .Values.localKeys.key }}
        path: kek.json
{{- end }}
{{- end -}}

{{/* The local key file copied from its Secret into the data dir, owned by the pod's
user with mode 0600 (the local provider refuses a file anyone else may read). */}}
{{- define "engram.initContainers" -}}
{{- if .Values.localKeys.existingSecret }}
initContainers:
  - name: local-keys
    image: {{ include "engram.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: ["sh", "-c", "install -D -m 0600 /local-keys/kek.json /var/lib/engram/keys/kek.json"]
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
      limits:
        memory: 64Mi
    volumeMounts:
      - name: local-keys
        mountPath: /local-keys
        readOnly: true
      - name: data
        mountPath: /var/lib/engram
{{- end }}
{{- end -}}

{{/* Refuse, at render time, values that `engram serve` would refuse at start. */}}
{{- define "engram.checkProfile" -}}
{{- if eq (toString .Values.config.profile) "production" -}}
{{- if not .Values.tls.existingSecret -}}
{{- fail "config.profile=production: set tls.existingSecret (a kubernetes.io/tls Secret); the production profile refuses to serve plain HTTP" -}}
{{- end -}}
{{- if and .Values.pgbouncer.enabled (not .Values.pgbouncer.tlsSecret) -}}
{{- fail "config.profile=production with pgbouncer.enabled: set pgbouncer.tlsSecret; the app's DSN to PgBouncer must use sslmode=verify-full" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* http or https, as the API serves. */}}
{{- define "engram.scheme" -}}
{{- if .Values.tls.existingSecret }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}
