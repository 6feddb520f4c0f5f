package v1alpha1

import _ "embed"

// CRD is the CustomResourceDefinition of applications.ferry.dev as YAML.
//
//go:embed crd.yaml
var CRD []byte

// ProjectCRD is the CustomResourceDefinition of projects.ferry.dev as YAML.
//
//go:embed crd_project.yaml
var ProjectCRD []byte
