{{/* The DRA driver name (contracts.md): the DeviceClass selectors and the agent's DRIVER_NAME. */}}
{{- define "tessera.driverName" -}}gpu.tessera.dev{{- end }}

{{/* Labels on every object: the two the kustomize base sets, plus Helm's bookkeeping. */}}
{{- define "tessera.labels" -}}
app.kubernetes.io/name: tessera
app.kubernetes.io/part-of: tessera
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The node pods' labels (and the DaemonSet's selector, which is immutable: keep it fixed). */}}
{{- define "tessera.nodeSelectorLabels" -}}
app.kubernetes.io/name: tessera
app.kubernetes.io/component: node
{{- end }}

{{/* The one ServiceAccount of the node pod; the admission policy keys on it. */}}
{{- define "tessera.serviceAccount" -}}tessera{{- end }}

{{- define "tessera.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* true when the agent runs on a fixture node: no device is touched, so no privilege is needed. */}}
{{- define "tessera.fake" -}}{{ hasPrefix "fixture:" .Values.discovery }}{{- end }}

{{/* The port of the agent's default --http-listen (DEFAULT_HTTP_LISTEN, agent/common/config.ts). */}}
{{- define "tessera.defaultMetricsPort" -}}9477{{- end }}
