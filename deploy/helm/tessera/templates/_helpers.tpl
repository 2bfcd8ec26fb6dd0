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

{{/* The proxy pods' labels (the proxy DaemonSet's selector and the Service's; keep it fixed). */}}
{{- define "tessera.proxySelectorLabels" -}}
app.kubernetes.io/name: tessera
app.kubernetes.io/component: proxy
{{- end }}

{{/* The one ServiceAccount of the node pod; the admission policy keys on it. */}}
{{- define "tessera.serviceAccount" -}}tessera{{- end }}

{{/* The proxy's own ServiceAccount: it holds no right of the agent's. */}}
{{- define "tessera.proxyServiceAccount" -}}tessera-proxy{{- end }}

{{/* The namespace of the proxy's Role: the InferencePool's (proxy.inferencePool, <namespace>/<name>).
With static endpoints the proxy calls no API; the Role then stays in "default", as
deploy/overlays/fake leaves the base's. */}}
{{- define "tessera.proxyRoleNamespace" -}}
{{- with .Values.proxy.inferencePool }}{{ first (splitList "/" .) }}{{ else }}default{{ end }}
{{- end }}

{{- define "tessera.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* true when the agent runs on a fixture node: no device is touched, so no privilege is needed. */}}
{{- define "tessera.fake" -}}{{ hasPrefix "fixture:" .Values.discovery }}{{- end }}

{{/* The port of the agent's default --http-listen (DEFAULT_HTTP_LISTEN, agent/common/config.ts). */}}
{{- define "tessera.defaultMetricsPort" -}}9477{{- end }}

{{/* The agent's HTTP port: metrics.port, else the agent's default. */}}
{{- define "tessera.metricsPort" -}}{{ .Values.metrics.port | default (include "tessera.defaultMetricsPort" .) }}{{- end }}

{{/* image and pull policy of a container (agent and proxy run the one image). */}}
{{- define "tessera.containerImage" -}}
image: {{ include "tessera.image" . }}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{/* Where a node pod runs, the same for the agent and the proxy: the proxy goes where the agent
goes (the GPU nodes, where the model servers run). Pull secrets, nodeSelector, tolerations. */}}
{{- define "tessera.podPlacement" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
