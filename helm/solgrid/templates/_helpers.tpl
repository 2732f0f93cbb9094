{{/* Chart name. */}}
{{- define "solgrid.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or the override. */}}
{{- define "solgrid.fullname" -}}
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

{{/* Name of a component's objects: <fullname>-<component>. Call with (list . "operator"). */}}
{{- define "solgrid.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "solgrid.fullname" $root | trunc 45 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "solgrid.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "solgrid.labels" -}}
helm.sh/chart: {{ include "solgrid.chart" . }}
app.kubernetes.io/name: {{ include "solgrid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: solgrid
{{- with .Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component. Call with (list . "operator"). */}}
{{- define "solgrid.componentLabels" -}}
{{ include "solgrid.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Selector labels of one component (immutable in Deployments: keep them small). */}}
{{- define "solgrid.selectorLabels" -}}
app.kubernetes.io/name: {{ include "solgrid.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* ServiceAccount name of a component. Call with (list . "operator" .Values.operator.serviceAccount). */}}
{{- define "solgrid.serviceAccountName" -}}
{{- $sa := index . 2 -}}
{{- if $sa.create -}}
{{- default (include "solgrid.componentName" (list (index . 0) (index . 1))) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference. Call with (list . .Values.operator.image). Repositories
     without a registry get global.imageRegistry; tags default to appVersion. */}}
{{- define "solgrid.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- $repo := $img.repository -}}
{{- if and $root.Values.global.imageRegistry (not (contains "/" $repo)) -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $root.Values.global.imageRegistry) $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* Whether the operator settles on Solana. */}}
{{- define "solgrid.solanaEnabled" -}}
{{- if .Values.solana.rpcUrl -}}true{{- end -}}
{{- end -}}

{{/* Fail early on an incomplete Solana configuration. */}}
{{- define "solgrid.validateSolana" -}}
{{- if .Values.solana.rpcUrl -}}
{{- if not .Values.solana.ioMint -}}{{- fail "solana.ioMint is required when solana.rpcUrl is set" -}}{{- end -}}
{{- if not .Values.solana.usdcMint -}}{{- fail "solana.usdcMint is required when solana.rpcUrl is set" -}}{{- end -}}
{{- if not .Values.solana.authorityKeypair.secretName -}}{{- fail "solana.authorityKeypair.secretName is required when solana.rpcUrl is set (a Secret holding the operator's authority keypair)" -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ledger's PVC name. */}}
{{- define "solgrid.ledgerClaim" -}}
{{- default (include "solgrid.componentName" (list . "ledger")) .Values.ledger.persistence.existingClaim -}}
{{- end -}}

{{/* Whether the ledger lives on a PVC. */}}
{{- define "solgrid.ledgerPersistent" -}}
{{- if and (not .Values.solana.rpcUrl) .Values.ledger.persistence.enabled -}}true{{- end -}}
{{- end -}}

{{/* imagePullSecrets of a pod spec (at indentation 6), or nothing. */}}
{{- define "solgrid.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
      imagePullSecrets:
{{- range . }}
        - name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Kubernetes username of a component's ServiceAccount token. Call with
     (list . "operator" .Values.operator.serviceAccount). */}}
{{- define "solgrid.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" (index . 0).Release.Namespace (include "solgrid.serviceAccountName" .) -}}
{{- end -}}

{{/* The identities the admission policies trust as the operator, as a JSON (and
     CEL) list of usernames: the operator's ServiceAccount plus
     admissionPolicies.extraOperatorUsers. */}}
{{- define "solgrid.operatorUsers" -}}
{{- $users := list (include "solgrid.serviceAccountUser" (list . "operator" .Values.operator.serviceAccount)) -}}
{{- range .Values.admissionPolicies.extraOperatorUsers }}{{ $users = append $users . }}{{ end -}}
{{- $users | toJson -}}
{{- end -}}

{{/* The schema defaults of the GpuNode status fields, from the chart's CRD, as a
     CEL map literal (each value wrapped in dyn(): CEL map literals are otherwise of
     one value type): a status field absent before a write counts as unchanged when
     it is written with its default (the API server fills defaults in). */}}
{{- define "solgrid.gpuNodeStatusDefaults" -}}
{{- $crd := .Files.Get "crds/gpunode.yaml" | fromYaml -}}
{{- $defaults := dict -}}
{{- range $crd.spec.versions -}}
{{- if .storage -}}
{{- range $k, $p := .schema.openAPIV3Schema.properties.status.properties -}}
{{- if hasKey $p "default" }}{{ $_ := set $defaults $k $p.default }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $defaults }}{{ fail "crds/gpunode.yaml: no status defaults found (is the CRD there?)" }}{{ end -}}
{{- include "solgrid.celLiteral" $defaults -}}
{{- end -}}

{{/* A value as a CEL literal whose map values and list items are each wrapped in
     dyn(), so that maps and lists of mixed types compile. */}}
{{- define "solgrid.celLiteral" -}}
{{- if kindIs "map" . -}}
{{- $entries := list -}}
{{- range $k := keys . | sortAlpha -}}
{{- $entries = append $entries (printf "%s: dyn(%s)" (toJson $k) (include "solgrid.celLiteral" (index $ $k))) -}}
{{- end -}}
{{- printf "{%s}" (join ", " $entries) -}}
{{- else if kindIs "slice" . -}}
{{- $items := list -}}
{{- range . }}{{ $items = append $items (printf "dyn(%s)" (include "solgrid.celLiteral" .)) }}{{ end -}}
{{- printf "[%s]" (join ", " $items) -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}
