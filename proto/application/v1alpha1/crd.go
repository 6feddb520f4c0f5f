package v1alpha1

import _ "embed"

// CRD is the CustomResourceDefinition of applications.ferry.dev as YAML.
//
//go:embed crd.yaml
var CRD []byte
