{{/* Names: <release>-livekit-ingress (or the release name if it already says livekit-ingress),
cut so that "<fullname>-frontdoor" still fits 63 characters. */}}
{{- define "lki.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: (list $ "operator") */}}
{{- define "lki.name" -}}
{{- printf "%s-%s" (include "lki.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{/* Labels that select one component's pods: (list $ "shim") */}}
{{- define "lki.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ $.Chart.Name }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Every object's labels: (list $ "shim") */}}
{{- define "lki.labels" -}}
{{- $ := index . 0 -}}
{{ include "lki.selectorLabels" . }}
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $.Release.Service }}
app.kubernetes.io/part-of: livekit-ingress
helm.sh/chart: {{ printf "%s-%s" $.Chart.Name $.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "lki.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "lki.mediaImage" -}}
{{- printf "%s:%s" .Values.mediaImage.repository (.Values.mediaImage.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Environment every component shares (ingress_operator/config.py). POD_IP comes first so
that listenAddress may be "$(POD_IP)". */}}
{{- define "lki.commonEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: INGRESS_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: LIVEKIT_SERVER_URL
  value: {{ .Values.livekit.url | quote }}
- name: RTMP_BASE_URL
  value: {{ .Values.publicUrls.rtmp | quote }}
- name: WHIP_BASE_URL
  value: {{ .Values.publicUrls.whip | quote }}
{{- end -}}

{{/* A map of maps (or of strings) with every leaf as a string, as JSON: Kubernetes quantities
and env values are strings, whatever YAML made of them. */}}
{{- define "lki.stringsJson" -}}
{{- $out := dict -}}
{{- range $k, $v := . -}}
{{- if kindIs "map" $v -}}
{{- $inner := dict -}}
{{- range $k2, $v2 := $v -}}
{{- $_ := set $inner $k2 (toString $v2) -}}
{{- end -}}
{{- $_ := set $out $k $inner -}}
{{- else -}}
{{- $_ := set $out $k (toString $v) -}}
{{- end -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{/* Pod spec fields every Deployment of the chart shares: (list $ .Values.shim "shim") */}}
{{- define "lki.podCommon" -}}
{{- $ := index . 0 -}}
{{- $c := index . 1 -}}
serviceAccountName: {{ include "lki.name" (list $ (index . 2)) }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
