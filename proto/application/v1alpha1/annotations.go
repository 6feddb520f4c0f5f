package v1alpha1

// Annotations and labels on the objects an app manages. They are a
// contract between the rooms: a repository (or render, for Helm hooks)
// writes them, apply reads them, and the tests of both check them. So
// they are defined here, once, and nowhere else.
const (
	// AnnotationApp names the app that owns an object, as namespace/name.
	// ferry never prunes an object whose AnnotationApp names another app.
	AnnotationApp = "ferry.dev/app"
	// LabelManaged is "true" on every object an app's sync applies, hooks
	// excepted, so that watches can filter on the server.
	LabelManaged = "ferry.dev/managed"
	// AnnotationSSA set to "if-not-present" creates a missing object and
	// otherwise leaves it alone.
	AnnotationSSA = "ferry.dev/ssa"
	// AnnotationPrune set to "disabled" keeps an object that left Git.
	AnnotationPrune = "ferry.dev/prune"
	// AnnotationSyncWave orders objects: lower waves are applied first.
	AnnotationSyncWave = "ferry.dev/sync-wave"
	// AnnotationHook makes an object a hook of the comma-separated phases
	// PreSync, Sync, PostSync, SyncFail, or Skip.
	AnnotationHook = "ferry.dev/hook"
	// AnnotationHookWeight orders the hooks of one phase, lowest first.
	AnnotationHookWeight = "ferry.dev/hook-weight"
	// AnnotationHookDeletePolicy lists when a hook is deleted:
	// BeforeHookCreation (the default), HookSucceeded, HookFailed.
	AnnotationHookDeletePolicy = "ferry.dev/hook-delete-policy"
	// AnnotationSOPSDocument holds, base64-encoded, the SOPS-encrypted
	// document an object was rendered from, as Git has it: SOPS's MAC
	// covers the document's values in their order, which decoding loses.
	// Only ferry's render sets it (one from Git is dropped); the apply
	// role decrypts it just before the object is applied and removes it,
	// with the object's sops field.
	AnnotationSOPSDocument = "sops.ferry.dev/document"
	// AnnotationSOPSSource names the file of that document, for errors.
	AnnotationSOPSSource = "sops.ferry.dev/source"
	// AnnotationSOPSGeneratedPrefix begins the annotations a Kustomize
	// secretGenerator's Secret gets for each SOPS-encrypted dotenv or
	// binary file it reads: base64 of a JSON SOPSGenerated. Only ferry's
	// render sets them; the apply role fills the Secret's data from them.
	AnnotationSOPSGeneratedPrefix = "sops.ferry.dev/generated."
	// SOPSPlaceholderPrefix begins the data keys that stand, in a
	// generated Secret, for the encrypted files ferry decrypts at apply:
	// their values are hashes of the ciphertext, so that Kustomize's name
	// suffix changes with the file. The apply role removes them.
	SOPSPlaceholderPrefix = "ferry-sops-placeholder."
)

// Argo CD's spellings, honoured after ferry's own so that a repository
// written for Argo CD syncs unchanged. Helm's hook annotations come from
// Helm's own package (helm.sh/helm/v3/pkg/release), not from here.
const (
	// ArgoAnnotationHook is Argo CD's AnnotationHook.
	ArgoAnnotationHook = "argocd.argoproj.io/hook"
	// ArgoAnnotationHookWeight is Argo CD's AnnotationHookWeight.
	ArgoAnnotationHookWeight = "argocd.argoproj.io/hook-weight"
	// ArgoAnnotationHookDeletePolicy is Argo CD's AnnotationHookDeletePolicy.
	ArgoAnnotationHookDeletePolicy = "argocd.argoproj.io/hook-delete-policy"
	// ArgoAnnotationSyncWave is Argo CD's AnnotationSyncWave.
	ArgoAnnotationSyncWave = "argocd.argoproj.io/sync-wave"
	// ArgoAnnotationSyncOptions holds Argo CD's per-object sync options,
	// of which ferry reads Prune=false and Prune=confirm.
	ArgoAnnotationSyncOptions = "argocd.argoproj.io/sync-options"
)

// SOPSGenerated is one SOPS-encrypted file a Kustomize secretGenerator
// reads, carried to the apply role (AnnotationSOPSGeneratedPrefix).
type SOPSGenerated struct {
	// Kind is "envs" (a dotenv file: one data key per line) or "files"
	// (one data key, Key, holding the file).
	Kind string `json:"kind"`
	Key  string `json:"key,omitempty"`
	// Format is the file's SOPS format: dotenv, json, yaml or binary.
	Format string `json:"format"`
	// File is the file's repository path, for errors.
	File string `json:"file"`
	// Document is the encrypted file as Git has it.
	Document []byte `json:"document"`
}
