package v1alpha1

import "k8s.io/apimachinery/pkg/runtime/schema"

// ApplicationsResource is the GroupVersionResource of ferry Applications.
var ApplicationsResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}
