{{/* Names and labels shared by every template. */}}

{{- define "mfa-recall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mfa-recall.fullname" -}}
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

{{- define "mfa-recall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mfa-recall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mfa-recall.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mfa-recall.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: mfa-recall
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mfa-recall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mfa-recall.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mfa-recall.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "mfa-recall.ledgerKeySecret" -}}
{{- default (printf "%s-ledger-key" (include "mfa-recall.fullname" .)) .Values.ledger.keySecret }}
{{- end }}

{{- /* The console's pods carry a name of their own, so the operator's selectors (Service, PDB, NetworkPolicy) never pick them. */}}
{{- define "mfa-recall.console.fullname" -}}
{{- printf "%s-console" (include "mfa-recall.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "mfa-recall.console.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-console" (include "mfa-recall.name" . | trunc 55 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mfa-recall.console.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mfa-recall.console.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: console
app.kubernetes.io/part-of: mfa-recall
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mfa-recall.console.serviceAccountName" -}}
{{- if .Values.console.serviceAccount.create }}
{{- default (include "mfa-recall.console.fullname" .) .Values.console.serviceAccount.name }}
{{- else }}
{{- required "console.serviceAccount.name is required when console.serviceAccount.create is false" .Values.console.serviceAccount.name }}
{{- end }}
{{- end }}

{{- /* The namespace the console shows: named, else the one the operator watches, else the release's. */}}
{{- define "mfa-recall.console.namespace" -}}
{{- .Values.console.namespace | default .Values.watchNamespace | default .Release.Namespace }}
{{- end }}
