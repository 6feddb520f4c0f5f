package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BinDirEnv names the environment variable that overrides BinDir.
const BinDirEnv = "FERRY_CONTROLPLANE_DIR"

const modulePath = "github.com/ferrycd/ferry"

// binaryNames are the binaries that build.sh puts in BinDir.
func binaryNames() []string {
	return []string{"etcd", "kube-apiserver", "kube-controller-manager"}
}

// RepoRoot returns the root of the ferry repository: the nearest folder, from
// the working directory up, whose go.mod declares module github.com/ferrycd/ferry.
func RepoRoot() (string, error) {
	start, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the ferry repository root failed: %w", err)
	}
	for dir := start; ; {
		ok, err := isFerryModule(filepath.Join(dir, "go.mod"))
		if err != nil {
			return "", fmt.Errorf("finding the ferry repository root failed: %w", err)
		}
		if ok {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s in %s or any folder above it", modulePath, start)
		}
		dir = parent
	}
}

// isFerryModule reports whether the go.mod at path is ferry's main module.
// Nested modules such as integration/controlplane have other module paths.
func isFerryModule(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return false, sc.Err()
	}
	fields := strings.Fields(sc.Text())
	return len(fields) == 2 && fields[0] == "module" && fields[1] == modulePath, nil
}

// BinDir returns the folder that holds the control-plane binaries:
// $FERRY_CONTROLPLANE_DIR if set, else <repo root>/.bin/controlplane.
func BinDir() (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		// Each test binary runs in its own package folder, so a relative
		// path would name a different folder for each of them.
		return filepath.Abs(dir)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".bin", "controlplane"), nil
}

// missingBinaries returns the binaries that are not executable files in dir.
func missingBinaries(dir string) []string {
	var missing []string
	for _, name := range binaryNames() {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}

// EnsureBinaries returns BinDir after building any missing control-plane
// binary with integration/controlplane/build.sh, whose output goes to logw
// (nil discards it). Concurrent callers, also in other processes, wait on a
// file lock beside the folder instead of building a second time.
func EnsureBinaries(ctx context.Context, logw io.Writer) (string, error) {
	dir, err := BinDir()
	if err != nil {
		return "", err
	}
	if len(missingBinaries(dir)) == 0 {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating control-plane folder failed: %w", err)
	}
	unlock, err := lockFile(ctx, dir+".lock", logw)
	if err != nil {
		return "", err
	}
	defer unlock()

	// Another process may have built them while this one waited for the lock.
	missing := missingBinaries(dir)
	if len(missing) == 0 {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "integration", "controlplane", "build.sh")
	out := newProcLog("", newLineWriter(logw))
	fmt.Fprintf(out, "testenv: %s missing in %s; building with %s (several minutes on 2 cores)\n",
		strings.Join(missing, ", "), dir, script)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(os.Environ(), BinDirEnv+"="+dir)
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig stops the build when the test binary dies (a -timeout panic),
	// and WaitDelay stops Wait from hanging on a go build that outlives bash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building control-plane binaries with %s failed: %w%s", script, err, out.tailSection("build.sh"))
	}
	if missing := missingBinaries(dir); len(missing) > 0 {
		return "", fmt.Errorf("%s finished but %s still missing in %s%s", script, strings.Join(missing, ", "), dir, out.tailSection("build.sh"))
	}
	fmt.Fprintf(out, "testenv: built control-plane binaries in %s\n", time.Since(start).Round(time.Second))
	return dir, nil
}

// lockFile takes an exclusive flock on path, polling so that ctx can cancel
// the wait, and returns the function that releases it.
func lockFile(ctx context.Context, path string, logw io.Writer) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s failed: %w", path, err)
	}
	fd := int(f.Fd())
	told := false
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(fd, syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s failed: %w", path, err)
		}
		if !told && logw != nil {
			fmt.Fprintf(logw, "testenv: waiting for another process building control-plane binaries (lock %s)\n", path)
			told = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for lock %s failed: %w", path, context.Cause(ctx))
		case <-time.After(250 * time.Millisecond):
		}
	}
}
