// Package v1alpha1 holds the Application API of ferry (applications.ferry.dev,
// version v1alpha1) and its CustomResourceDefinition. The spec follows Argo
// CD's Application field names, so a repository written for Argo CD ports over
// by changing apiVersion.
//
// The types are plain structs with JSON tags: they import apimachinery's
// metav1 for object metadata and nothing of client-go, NATS or ferry's roles,
// so any package can use them cheaply. Clients convert to and from
// unstructured objects; there is no generated deep-copy code.
package v1alpha1
