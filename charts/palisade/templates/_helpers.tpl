{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "palisade.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the objects. A release called "palisade" (the documented one)
gives "palisade", so the ServiceAccount is system:serviceaccount:NS:palisade.
*/}}
{{- define "palisade.fullname" -}}
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

{{/*
chart label value: name-version.
*/}}
{{- define "palisade.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (DaemonSet selectors are
immutable), so nothing version-dependent here.
*/}}
{{- define "palisade.selectorLabels" -}}
app.kubernetes.io/name: {{ include "palisade.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Standard labels on every object. Each template adds its own
app.kubernetes.io/component (agent, metrics, monitoring or dashboard).
*/}}
{{- define "palisade.labels" -}}
helm.sh/chart: {{ include "palisade.chart" . }}
{{ include "palisade.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: palisade
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of one object, sorted: selector labels and the component win over
user-supplied `extra` labels, which win over `defaults` and the standard set.
Usage: include "palisade.componentLabels" (dict "ctx" . "component" "agent" "extra" .Values.podLabels "defaults" (dict))
*/}}
{{- define "palisade.componentLabels" -}}
{{- $ctx := .ctx }}
{{- $std := include "palisade.labels" $ctx | fromYaml }}
{{- $win := merge (include "palisade.selectorLabels" $ctx | fromYaml) (dict "app.kubernetes.io/component" .component) }}
{{- toYaml (merge $win (deepCopy (.extra | default dict)) (deepCopy (.defaults | default dict)) $std) }}
{{- end }}

{{- define "palisade.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "palisade.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "palisade.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
--metrics-addr value: host:port, with IPv6 hosts bracketed.
*/}}
{{- define "palisade.metricsAddr" -}}
{{- $host := .Values.metricsBindAddress | toString | trimPrefix "[" | trimSuffix "]" }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int .Values.metricsPort) }}
{{- else }}
{{- printf "%s:%d" $host (int .Values.metricsPort) }}
{{- end }}
{{- end }}

{{/*
Seconds in a duration as `palisade agent` parses it (src/cli.rs
parse_duration): an integer with unit ms, s or m, or a plain number of
seconds ("100ms", "60s", "5m", "90"). Returned as a plain decimal number.
Fails rendering on anything else, as the agent would fail to start.
Usage: include "palisade.durationSeconds" (dict "value" "60s" "what" "refreshInterval")
*/}}
{{- define "palisade.durationSeconds" -}}
{{- $s := .value | toString | trim }}
{{- if not (regexMatch "^[0-9]+(ms|s|m)?$" $s) }}
{{- fail (printf "%s: %q is not a duration palisade accepts (an integer with unit ms, s or m, e.g. 100ms, 60s, 5m)" .what $s) }}
{{- end }}
{{- $num := regexFind "^[0-9]+" $s | float64 }}
{{- $unit := regexReplaceAll "^[0-9]+" $s "" }}
{{- $total := mulf $num (get (dict "" 1.0 "s" 1.0 "m" 60.0 "ms" 0.001) $unit) }}
{{- if le $total 0.0 }}
{{- fail (printf "%s: %q must be longer than zero" .what $s) }}
{{- end }}
{{- include "palisade.formatNumber" $total }}
{{- end }}

{{/*
A float as a plain decimal with at most 3 decimals: 180, 0.5, 90.25
(%g would switch to exponent notation for large values).
*/}}
{{- define "palisade.formatNumber" -}}
{{- printf "%.3f" (float64 .) | trimSuffix "0" | trimSuffix "0" | trimSuffix "0" | trimSuffix "." }}
{{- end }}

{{/*
Arguments of the agent container.
*/}}
{{- define "palisade.args" -}}
- agent
- --metrics-addr={{ include "palisade.metricsAddr" . }}
- --refresh-interval={{ .Values.refreshInterval }}
- --counters-interval={{ .Values.countersInterval }}
- --max-ipset-size={{ int .Values.maxIpsetSize }}
- --enforcement={{ .Values.enforcement }}
- --nflog-group={{ .Values.deniedFlowLog.nflogGroup }}
- --denied-log-window={{ .Values.deniedFlowLog.window }}
- --denied-log-rate={{ .Values.deniedFlowLog.linesPerSecond }}
{{- if .Values.deniedFlowLog.allNamespaces }}
- --log-denied
{{- end }}
- --debounce={{ .Values.debounce }}
- --backend={{ .Values.backend }}
- --calico-api={{ .Values.calicoApi }}
- --log-format={{ .Values.logFormat }}
{{- if .Values.cleanupOnUninstall }}
- --cleanup-on-exit
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | toString | quote }}
{{- end }}
{{- end }}

{{/*
Namespace of an optional monitoring object: its own override or the release's.
*/}}
{{- define "palisade.namespaceFor" -}}
{{- default .root.Release.Namespace .override }}
{{- end }}
