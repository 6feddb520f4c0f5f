package ingest

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// ProjectStore is an informer-backed view of the Projects in ferry's
// namespace, read by the roles when they check an app against its project.
type ProjectStore struct {
	informer  cache.SharedIndexInformer
	namespace string
}

// NewProjectStore returns a store of the Projects in namespace; Start
// fills it.
func NewProjectStore(dyn dynamic.Interface, namespace string) *ProjectStore {
	return &ProjectStore{informer: slimInformer(dyn, v1alpha1.ProjectsResource, namespace), namespace: namespace}
}

// Start runs the informer until ctx is done.
func (s *ProjectStore) Start(ctx context.Context) error {
	s.informer.Run(ctx.Done())
	return nil
}

// WaitSynced waits until the store holds every Project.
func (s *ProjectStore) WaitSynced(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return fmt.Errorf("project informer did not sync: %w", context.Cause(ctx))
	}
	return nil
}

// Project returns the Project name, or an error apierrors.IsNotFound knows.
func (s *ProjectStore) Project(name string) (*v1alpha1.Project, error) {
	it, ok, err := s.informer.GetStore().GetByKey(s.namespace + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(v1alpha1.ProjectsResource.GroupResource(), name)
	}
	return decodeObject[v1alpha1.Project](it)
}
