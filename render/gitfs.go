package render

import (
	"bytes"
	"errors"
	"strings"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/util"
)

// idxReadingFS serves a repository's pack indexes from memory: go-git
// decodes an index with thousands of small unbuffered reads, one system
// call each, which made loading the indexes cost milliseconds per pack.
// Everything else passes through.
type idxReadingFS struct{ billy.Filesystem }

func (f idxReadingFS) Open(name string) (billy.File, error) {
	if !strings.HasSuffix(name, ".idx") {
		return f.Filesystem.Open(name)
	}
	data, err := util.ReadFile(f.Filesystem, name)
	if err != nil {
		return nil, err
	}
	return &idxFile{name: name, Reader: bytes.NewReader(data)}, nil
}

// idxFile is a pack index read into memory, as a read-only billy.File.
type idxFile struct {
	name string
	*bytes.Reader
}

var errIdxReadOnly = errors.New("a pack index read into memory is read-only")

func (m *idxFile) Name() string              { return m.name }
func (m *idxFile) Write([]byte) (int, error) { return 0, errIdxReadOnly }
func (m *idxFile) Close() error              { return nil }
func (m *idxFile) Lock() error               { return nil }
func (m *idxFile) Unlock() error             { return nil }
func (m *idxFile) Truncate(int64) error      { return errIdxReadOnly }
