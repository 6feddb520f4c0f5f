package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Group, Version and names of the Application resource.
const (
	Group    = "ferry.dev"
	Version  = "v1alpha1"
	Kind     = "Application"
	Resource = "applications"
)

// APIVersion is the apiVersion string of ferry Applications.
const APIVersion = Group + "/" + Version

// Application is a set of Kubernetes objects rendered from Git and kept in
// sync with it.
type Application struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ApplicationSpec   `json:"spec"`
	Status ApplicationStatus `json:"status,omitempty"`
}

// ApplicationSpec is what the Application deploys and how.
type ApplicationSpec struct {
	Source      *ApplicationSource  `json:"source,omitempty"`
	Sources     []ApplicationSource `json:"sources,omitempty"`
	Destination Destination         `json:"destination"`
	SyncPolicy  *SyncPolicy         `json:"syncPolicy,omitempty"`
	// Project names the app's Project, in ferry's namespace: what it may
	// deploy from and to. Empty means "default".
	Project string `json:"project,omitempty"`
	// Suspend stops every sync and self-heal of the app until cleared.
	Suspend bool `json:"suspend,omitempty"`
	// Decryption says how the app's SOPS documents are decrypted, as on a
	// Flux Kustomization. Without it, SOPS documents are decrypted with the
	// default key Secret.
	Decryption *Decryption `json:"decryption,omitempty"`
}

// Decryption selects the keys of an app's SOPS documents.
type Decryption struct {
	// Provider is "sops", the only one.
	Provider string `json:"provider,omitempty"`
	// SecretRef names the Secret in ferry's namespace whose keys ending
	// in ".agekey" decrypt the app's documents, in place of the default
	// one. The app's project must allow it (decryptionSecrets).
	SecretRef *LocalSecretReference `json:"secretRef,omitempty"`
}

// LocalSecretReference names a Secret in ferry's namespace.
type LocalSecretReference struct {
	Name string `json:"name"`
}

// DecryptionSecret names the key Secret of app's SOPS documents; empty
// means the default one.
func (s ApplicationSpec) DecryptionSecret() string {
	if s.Decryption == nil || s.Decryption.SecretRef == nil {
		return ""
	}
	return s.Decryption.SecretRef.Name
}

// ApplicationSource is one place the Application's manifests come from.
type ApplicationSource struct {
	RepoURL        string `json:"repoURL"`
	TargetRevision string `json:"targetRevision,omitempty"`
	Path           string `json:"path,omitempty"`
	Chart          string `json:"chart,omitempty"`
	Ref            string `json:"ref,omitempty"`

	Helm      *HelmSource      `json:"helm,omitempty"`
	Kustomize *KustomizeSource `json:"kustomize,omitempty"`
	Directory *DirectorySource `json:"directory,omitempty"`
}

// HelmSource holds the Helm options of a source.
type HelmSource struct {
	ReleaseName  string          `json:"releaseName,omitempty"`
	ValueFiles   []string        `json:"valueFiles,omitempty"`
	Values       string          `json:"values,omitempty"`
	ValuesObject map[string]any  `json:"valuesObject,omitempty"`
	Parameters   []HelmParameter `json:"parameters,omitempty"`
}

// HelmParameter is one --set style override.
type HelmParameter struct {
	Name        string `json:"name"`
	Value       string `json:"value"`
	ForceString bool   `json:"forceString,omitempty"`
}

// KustomizeSource holds the Kustomize options of a source.
type KustomizeSource struct {
	Images       []string          `json:"images,omitempty"`
	NamePrefix   string            `json:"namePrefix,omitempty"`
	NameSuffix   string            `json:"nameSuffix,omitempty"`
	CommonLabels map[string]string `json:"commonLabels,omitempty"`
	Namespace    string            `json:"namespace,omitempty"`
}

// DirectorySource holds the options of a plain directory of manifests.
type DirectorySource struct {
	Recurse bool   `json:"recurse,omitempty"`
	Include string `json:"include,omitempty"`
	Exclude string `json:"exclude,omitempty"`
	// Jsonnet is Argo CD's jsonnet options. ferry does not render jsonnet:
	// a source that sets them is refused, naming the field.
	Jsonnet map[string]any `json:"jsonnet,omitempty"`
}

// Destination is where the Application's objects go.
type Destination struct {
	Server    string `json:"server,omitempty"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// SyncPolicy says when and how the Application syncs.
type SyncPolicy struct {
	Automated   *Automated `json:"automated,omitempty"`
	SyncOptions []string   `json:"syncOptions,omitempty"`
	Retry       *Retry     `json:"retry,omitempty"`
}

// Automated turns on syncing on every change in Git.
type Automated struct {
	Prune      bool `json:"prune,omitempty"`
	SelfHeal   bool `json:"selfHeal,omitempty"`
	AllowEmpty bool `json:"allowEmpty,omitempty"`
}

// Retry bounds the retries of a failed sync.
type Retry struct {
	Limit   int64    `json:"limit,omitempty"`
	Backoff *Backoff `json:"backoff,omitempty"`
}

// Backoff is the retry backoff: duration, multiplied by factor each retry, up
// to maxDuration.
type Backoff struct {
	Duration    string `json:"duration,omitempty"`
	Factor      *int64 `json:"factor,omitempty"`
	MaxDuration string `json:"maxDuration,omitempty"`
}

// Sync status codes.
const (
	SyncStatusSynced    = "Synced"
	SyncStatusOutOfSync = "OutOfSync"
	SyncStatusUnknown   = "Unknown"
)

// Operation phases.
const (
	PhaseRunning   = "Running"
	PhaseSucceeded = "Succeeded"
	PhaseFailed    = "Failed"
)

// ApplicationStatus is what ferry observed and did.
type ApplicationStatus struct {
	Sync           SyncStatus      `json:"sync,omitempty"`
	Health         HealthStatus    `json:"health,omitempty"`
	OperationState *OperationState `json:"operationState,omitempty"`
	Resources      []ResourceState `json:"resources,omitempty"`
	History        []SyncHistory   `json:"history,omitempty"`
	Conditions     []Condition     `json:"conditions,omitempty"`
	// LastError is the message of the last failed sync, cleared by a
	// successful one.
	LastError string `json:"lastError,omitempty"`
	// ReconciledAt is when ferry last finished a sync of this app.
	ReconciledAt *metav1.Time `json:"reconciledAt,omitempty"`
	// ObservedGeneration is the spec generation the last sync used.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Inputs are the repository paths the last render read beyond each
	// source's path (local chart dependencies, Kustomize bases), so that a
	// push touching them syncs the app.
	Inputs []InputPath `json:"inputs,omitempty"`
}

// InputPath is one repository path an app's render read.
type InputPath struct {
	RepoURL string `json:"repoURL"`
	Path    string `json:"path"`
	// Shallow means only the files directly in Path count: a directory
	// source without recurse reads nothing below it.
	Shallow bool `json:"shallow,omitempty"`
}

// SyncStatus compares the cluster with Git.
type SyncStatus struct {
	Status   string `json:"status,omitempty"`
	Revision string `json:"revision,omitempty"`
	// BundleHash names the rendered bundle last applied in full, so that
	// self-heal and PostSync reuse it without rendering again.
	BundleHash string `json:"bundleHash,omitempty"`
	// DecryptedWith names the SOPS key Secret the last sync decrypted
	// with, when it decrypted anything: a change to that Secret syncs the
	// app again.
	DecryptedWith string `json:"decryptedWith,omitempty"`
}

// DecryptFailed begins the message of a sync that could not decrypt a
// SOPS document: a change to the app's key Secret syncs it again.
const DecryptFailed = "cannot decrypt SOPS document"

// HealthStatus is the app's health, the worst of its objects.
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// OperationState describes the last sync.
type OperationState struct {
	Phase      string          `json:"phase,omitempty"`
	Message    string          `json:"message,omitempty"`
	Revision   string          `json:"revision,omitempty"`
	Trigger    string          `json:"trigger,omitempty"`
	StartedAt  metav1.Time     `json:"startedAt,omitempty"`
	FinishedAt *metav1.Time    `json:"finishedAt,omitempty"`
	Resources  []ResourceState `json:"resources,omitempty"`
}

// ResourceState is one object of the app and what happened to it.
type ResourceState struct {
	Group     string `json:"group,omitempty"`
	Version   string `json:"version,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status,omitempty"`
	Message   string `json:"message,omitempty"`
}

// SyncHistory is one past sync.
type SyncHistory struct {
	ID         int64       `json:"id"`
	Revision   string      `json:"revision"`
	Phase      string      `json:"phase,omitempty"`
	Trigger    string      `json:"trigger,omitempty"`
	DeployedAt metav1.Time `json:"deployedAt"`
	TraceID    string      `json:"traceID,omitempty"`
	// SpanID is the apply span of the sync, so a later drift re-apply can
	// link to it.
	SpanID  string `json:"spanID,omitempty"`
	Message string `json:"message,omitempty"`
	// BundleHash names the rendered bundle the sync applied; the bundle
	// collector keeps the bundles the last history entries name.
	BundleHash string `json:"bundleHash,omitempty"`
}

// Condition is a notable fact about the app, such as a warning.
type Condition struct {
	Type               string       `json:"type"`
	Message            string       `json:"message"`
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
}

// HistoryLimit is how many past syncs the status keeps.
const HistoryLimit = 10

// AllSources returns the sources of the app: spec.sources when set, else the
// single spec.source.
func (s *ApplicationSpec) AllSources() []ApplicationSource {
	if len(s.Sources) > 0 {
		return s.Sources
	}
	if s.Source != nil {
		return []ApplicationSource{*s.Source}
	}
	return nil
}

// Annotations and finalizers ferry reads on Applications.
const (
	// ResourcesFinalizer makes deleting an Application delete its
	// resources first, as Argo CD's resources-finalizer does.
	ResourcesFinalizer = "ferry.dev/resources-finalizer"
	// ArgoResourcesFinalizer is Argo CD's spelling, honoured too.
	ArgoResourcesFinalizer = "resources-finalizer.argocd.argoproj.io"
	// AnnotationUnsupported lists the fields of an Argo CD Application
	// document that ferry does not support yet.
	AnnotationUnsupported = "ferry.dev/unsupported-fields"
)

// Condition types ferry sets.
const (
	ConditionUnsupportedFields = "UnsupportedFields"
	ConditionInvalidSpec       = "InvalidSpec"
	ConditionSuspended         = "Suspended"
	ConditionRefDeleted        = "RefDeleted"
)

// Destination servers that name the cluster ferry runs in.
const (
	InClusterServer = "https://kubernetes.default.svc"
	InClusterName   = "in-cluster"
)

// IsAutomated reports whether the app syncs on every change in Git.
func (s *ApplicationSpec) IsAutomated() bool {
	return s.SyncPolicy != nil && s.SyncPolicy.Automated != nil
}
