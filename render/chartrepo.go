package render

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/Masterminds/semver/v3"
	"golang.org/x/sync/singleflight"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/repo"
	"oras.land/oras-go/v2/errdef"
	"sigs.k8s.io/yaml"
)

// chartStore downloads charts from Helm HTTP repositories and OCI
// registries and keeps them on disk: by name and version, since published
// chart versions are immutable by convention, or by digest when the source
// names one. A version range is resolved against the repository each time
// (the HTTP index is kept for indexTTL).
type chartStore struct {
	dir      string
	creds    Credentials
	maxBytes int64
	indexTTL time.Duration
	timeout  time.Duration
	hosts    hostPolicy

	flights singleflight.Group

	mu      sync.Mutex
	indexes map[string]cachedIndex
}

type cachedIndex struct {
	index   *repo.IndexFile
	fetched time.Time
}

// chartRef is a chart pinned to one version of one repository.
type chartRef struct {
	repoURL string
	name    string
	version string // as the repository spells it
	digest  string // sha256 of the archive or OCI manifest, when known
	oci     bool
	url     string // HTTP: where the archive is
}

func (c chartRef) String() string {
	return fmt.Sprintf("chart %s %s from %s", c.name, c.version, redactURL(c.repoURL))
}

func newChartStore(dir string, creds Credentials, maxBytes int64, indexTTL, timeout time.Duration, hosts []string) *chartStore {
	return &chartStore{dir: dir, creds: creds, maxBytes: maxBytes, indexTTL: indexTTL, timeout: timeout, hosts: hosts, indexes: map[string]cachedIndex{}}
}

// checkRepo refuses, before any request, a chart repository whose URL
// carries credentials or whose host is not allowed.
func (s *chartStore) checkRepo(repoURL string) error {
	if err := checkURLCredentials(repoURL, true); err != nil {
		return err
	}
	return s.hosts.check("chart repository", repoURL)
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// exactVersion reports whether spec names one version rather than a range.
func exactVersion(spec string) bool {
	if digestRE.MatchString(spec) {
		return true
	}
	_, err := semver.StrictNewVersion(strings.TrimPrefix(spec, "v"))
	return err == nil
}

// isOCIRepo reports whether a chart repository URL is an OCI registry:
// oci://, or no scheme at all (Argo CD's enableOCI repositories).
func isOCIRepo(repoURL string, creds *RepoCredentials) bool {
	if strings.HasPrefix(repoURL, "oci://") || (creds != nil && creds.EnableOCI) {
		return true
	}
	return !strings.Contains(repoURL, "://")
}

// resolve pins name at spec (a version, a range, a digest or empty for the
// newest) in repoURL. An exact version resolves without the network.
func (s *chartStore) resolve(ctx context.Context, repoURL, name, spec string) (chartRef, error) {
	if err := s.checkRepo(repoURL); err != nil {
		return chartRef{}, err
	}
	creds, err := lookupCredentials(ctx, s.creds, repoURL)
	if err != nil {
		return chartRef{}, err
	}
	spec = strings.TrimSpace(spec)
	ref := chartRef{repoURL: repoURL, name: name, version: spec, oci: isOCIRepo(repoURL, creds)}
	if ref.oci {
		if exactVersion(spec) {
			if digestRE.MatchString(spec) {
				ref.digest = spec
			}
			return ref, nil
		}
		tags, err := s.ociTags(ctx, ref, creds)
		if err != nil {
			return chartRef{}, err
		}
		v, err := registry.GetTagMatchingVersionOrConstraint(tags, spec)
		if err != nil {
			return chartRef{}, &SourceError{Err: fmt.Errorf("chart %s in %s: no version matches %q", name, redactURL(repoURL), spec)}
		}
		ref.version = v
		return ref, nil
	}
	if exactVersion(spec) {
		if _, err := os.Stat(s.archivePath(ref)); err == nil {
			return ref, nil
		}
	}
	idx, err := s.index(ctx, repoURL, creds)
	if err != nil {
		return chartRef{}, err
	}
	cv, err := idx.Get(name, spec)
	if err != nil {
		return chartRef{}, &SourceError{Err: fmt.Errorf("chart %s in %s: no version matches %q: %v", name, redactURL(repoURL), spec, err)}
	}
	if len(cv.URLs) == 0 {
		return chartRef{}, &SourceError{Err: fmt.Errorf("chart %s %s in %s has no download URL", name, cv.Version, redactURL(repoURL))}
	}
	u, err := repo.ResolveReferenceURL(repoURL, cv.URLs[0])
	if err != nil {
		return chartRef{}, &SourceError{Err: fmt.Errorf("chart %s %s in %s: %v", name, cv.Version, redactURL(repoURL), err)}
	}
	ref.version, ref.url = cv.Version, u
	if cv.Digest != "" {
		ref.digest = "sha256:" + strings.TrimPrefix(cv.Digest, "sha256:")
	}
	return ref, nil
}

func (s *chartStore) archivePath(ref chartRef) string {
	sum := sha256.Sum256([]byte(strings.TrimSuffix(ref.repoURL, "/") + "\x00" + ref.name))
	kind := "http"
	if ref.oci {
		kind = "oci"
	}
	base := ref.version
	if ref.digest != "" && ref.version == ref.digest {
		base = strings.TrimPrefix(ref.digest, "sha256:")
	}
	return filepath.Join(s.dir, kind, hex.EncodeToString(sum[:12]), safeFileName(ref.name+"-"+base)+".tgz")
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._+-]`)

func safeFileName(s string) string { return unsafeFileChars.ReplaceAllString(s, "_") }

// load returns the chart ref names, downloading it once. Each call returns
// a fresh *chart.Chart: Helm edits the chart it renders.
func (s *chartStore) load(ctx context.Context, ref chartRef) (*chart.Chart, error) {
	p := s.archivePath(ref)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		ch := s.flights.DoChan(p, func() (any, error) {
			return s.download(context.WithoutCancel(ctx), ref, p)
		})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case res := <-ch:
			if res.Err != nil {
				return nil, res.Err
			}
			data = res.Val.([]byte)
		}
	} else if err != nil {
		return nil, fmt.Errorf("reading cached %s: %w", ref, err)
	}
	c, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("%s: not a chart archive: %v", ref, err)}
	}
	return c, nil
}

func (s *chartStore) download(ctx context.Context, ref chartRef, dst string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ctx, span := tracer().Start(ctx, "helm.pull")
	defer span.End()
	if err := s.checkRepo(ref.repoURL); err != nil {
		return nil, err
	}
	creds, err := lookupCredentials(ctx, s.creds, ref.repoURL)
	if err != nil {
		return nil, err
	}
	var data []byte
	if ref.oci {
		data, err = s.pullOCI(ctx, ref, creds)
	} else {
		if ref.url == "" {
			// Resolved from the disk cache, which has since lost it.
			if ref, err = s.resolve(ctx, ref.repoURL, ref.name, ref.version); err != nil {
				return nil, err
			}
		}
		data, err = s.get(ctx, ref.url, ref.repoURL, creds)
		if err == nil && ref.digest != "" {
			sum := sha256.Sum256(data)
			if got := "sha256:" + hex.EncodeToString(sum[:]); got != ref.digest {
				err = &SourceError{Err: fmt.Errorf("%s: downloaded archive has digest %s, the index says %s", ref, got, ref.digest)}
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(dst, data); err != nil {
		return nil, fmt.Errorf("caching %s: %w", ref, err)
	}
	return data, nil
}

func writeFileAtomic(dst string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

func (s *chartStore) httpClient(creds *RepoCredentials) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if creds != nil && creds.Insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with insecure: true
	}
	return &http.Client{Transport: guardTransport{hosts: s.hosts, base: tr}, Timeout: s.timeout}
}

// get downloads u. It sends the credentials only where they apply: the
// scheme, host and path of their URL (the repository's own origin when
// they name none), so an index pointing its archives elsewhere gets
// nothing; and over plain http only when their Secret says insecure.
func (s *chartStore) get(ctx context.Context, u, repoURL string, creds *RepoCredentials) ([]byte, error) {
	if err := s.hosts.check("chart download", u); err != nil {
		return nil, err
	}
	if err := checkURLCredentials(u, true); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("bad URL %s: %v", redactURL(u), err)}
	}
	if creds != nil && (creds.Username != "" || creds.Password != "") && credentialsApply(creds, u, repoURL) {
		req.SetBasicAuth(creds.Username, creds.Password)
	}
	resp, err := s.httpClient(creds).Do(req)
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("downloading %s: %s", redactURL(u), scrub(redactErr(err, u), creds.secrets())), Transient: !errors.Is(err, ErrHostNotAllowed)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &SourceError{
			Err:       fmt.Errorf("downloading %s: %s", redactURL(u), resp.Status),
			Transient: resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests,
		}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, s.maxBytes+1))
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("downloading %s: %v", redactURL(u), err), Transient: true}
	}
	if int64(len(data)) > s.maxBytes {
		return nil, &SourceError{Err: fmt.Errorf("downloading %s: larger than %d bytes: %w", redactURL(u), s.maxBytes, ErrLimitExceeded)}
	}
	return data, nil
}

// credentialsApply reports whether creds, found for repoURL, may go with a
// request to u: u is within the scope of their URL, or, when they name no
// URL, on the repository's own scheme and host. Over plain http they go
// only when their Secret says insecure.
func credentialsApply(creds *RepoCredentials, u, repoURL string) bool {
	if plainHTTP(u) && !creds.Insecure {
		return false
	}
	if creds.URL != "" {
		return scopeOf(creds.URL).covers(scopeOf(u))
	}
	ua, err1 := url.Parse(u)
	ub, err2 := url.Parse(repoURL)
	return err1 == nil && err2 == nil && strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host)
}

func (s *chartStore) index(ctx context.Context, repoURL string, creds *RepoCredentials) (*repo.IndexFile, error) {
	key := strings.TrimSuffix(repoURL, "/")
	s.mu.Lock()
	ci, ok := s.indexes[key]
	s.mu.Unlock()
	if ok && time.Since(ci.fetched) < s.indexTTL {
		return ci.index, nil
	}
	v, err, _ := s.flights.Do("index\x00"+key, func() (any, error) {
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		data, err := s.get(ctx, key+"/index.yaml", repoURL, creds)
		if err != nil {
			return nil, err
		}
		idx := &repo.IndexFile{}
		if err := yaml.Unmarshal(data, idx); err != nil {
			return nil, &SourceError{Err: fmt.Errorf("index of %s: %v", redactURL(repoURL), err)}
		}
		for name, vs := range idx.Entries {
			kept := vs[:0]
			for _, cv := range vs {
				if cv != nil && cv.Metadata != nil {
					kept = append(kept, cv)
				}
			}
			idx.Entries[name] = kept
		}
		idx.SortEntries()
		s.mu.Lock()
		s.indexes[key] = cachedIndex{index: idx, fetched: time.Now()}
		s.mu.Unlock()
		return idx, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*repo.IndexFile), nil
}

// ctxTransport makes the registry client's requests, which it sends with a
// background context, follow the render's context.
type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t ctxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.base.RoundTrip(req.WithContext(t.ctx))
}

func (s *chartStore) registryClient(ctx context.Context, creds *RepoCredentials) (*registry.Client, error) {
	hc := s.httpClient(creds)
	hc.Transport = ctxTransport{ctx: ctx, base: hc.Transport}
	opts := []registry.ClientOption{
		registry.ClientOptHTTPClient(hc),
		registry.ClientOptWriter(io.Discard),
		// A file that never exists: ferry's registry credentials come from
		// its Secrets, not from a user's Helm or Docker configuration.
		registry.ClientOptCredentialsFile(filepath.Join(s.dir, "no-registry-config.json")),
	}
	if creds != nil {
		if creds.Username != "" || creds.Password != "" {
			opts = append(opts, registry.ClientOptBasicAuth(creds.Username, creds.Password))
		}
		if creds.ForceHTTP {
			opts = append(opts, registry.ClientOptPlainHTTP())
		}
	}
	c, err := registry.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating registry client: %w", err)
	}
	return c, nil
}

func ociRef(ref chartRef) string {
	return strings.TrimSuffix(strings.TrimPrefix(ref.repoURL, "oci://"), "/") + "/" + ref.name
}

func (s *chartStore) ociTags(ctx context.Context, ref chartRef, creds *RepoCredentials) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c, err := s.registryClient(ctx, creds)
	if err != nil {
		return nil, err
	}
	tags, err := c.Tags(ociRef(ref))
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("listing tags of %s: %s", redactURL(ociRef(ref)), scrub(err.Error(), creds.secrets())), Transient: !errors.Is(err, ErrHostNotAllowed)}
	}
	return tags, nil
}

func (s *chartStore) pullOCI(ctx context.Context, ref chartRef, creds *RepoCredentials) ([]byte, error) {
	c, err := s.registryClient(ctx, creds)
	if err != nil {
		return nil, err
	}
	target := ociRef(ref)
	if ref.digest != "" && ref.version == ref.digest {
		target += "@" + ref.digest
	} else {
		// OCI tags cannot hold "+", so Helm pushes 1.0.0+build as 1.0.0_build.
		target += ":" + strings.ReplaceAll(ref.version, "+", "_")
	}
	res, err := c.Pull(target, registry.PullOptWithChart(true))
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("pulling %s: %s", redactURL(target), scrub(err.Error(), creds.secrets())), Transient: !errors.Is(err, errdef.ErrNotFound) && !errors.Is(err, ErrHostNotAllowed)}
	}
	if int64(len(res.Chart.Data)) > s.maxBytes {
		return nil, &SourceError{Err: fmt.Errorf("pulling %s: larger than %d bytes: %w", redactURL(target), s.maxBytes, ErrLimitExceeded)}
	}
	return res.Chart.Data, nil
}
