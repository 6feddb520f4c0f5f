package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const (
	// The envtest default (10.0.0.0/24) holds about 250 Services; a /12 holds
	// about a million, enough for the large integration tests.
	defaultServiceClusterIPRange = "10.96.0.0/12"

	// A loaded 2-core machine running several test binaries needs more than
	// envtest's default of 20 s to start a 145 MB kube-apiserver.
	processStartTimeout = 60 * time.Second
	processStopTimeout  = 20 * time.Second

	// controllerManagerReadyTimeout bounds the wait for kube-controller-manager
	// to run its controllers; it normally takes about a second.
	controllerManagerReadyTimeout = 60 * time.Second
)

// Options configures Start.
type Options struct {
	// WithControllerManager runs kube-controller-manager, so that Deployments,
	// ReplicaSets, namespaces and garbage collection behave as in a cluster.
	WithControllerManager bool

	// ServiceClusterIPRange is kube-apiserver's --service-cluster-ip-range.
	// Empty means 10.96.0.0/12.
	ServiceClusterIPRange string

	// Output receives the logs of etcd, kube-apiserver and
	// kube-controller-manager, each line prefixed with the process name.
	// Nil discards them; the last 64 KiB of each is kept for errors anyway.
	Output io.Writer

	// BuildOutput receives the output of build.sh when EnsureBinaries has to
	// build the binaries. Nil discards it.
	BuildOutput io.Writer
}

// DefaultOptions returns the Options that StartT uses.
func DefaultOptions() Options {
	return Options{
		WithControllerManager: true,
		ServiceClusterIPRange: defaultServiceClusterIPRange,
	}
}

// ControlPlane is a running etcd, kube-apiserver and, optionally,
// kube-controller-manager.
type ControlPlane struct {
	// Config authenticates as a member of system:masters. Copy it with
	// rest.CopyConfig before changing it.
	Config *rest.Config

	// AdminKubeconfig is the path of a kubeconfig file for a member of
	// system:masters; it is removed by Stop.
	AdminKubeconfig string

	env     *envtest.Environment
	tempDir string
	logs    []*procLog

	kcm     *exec.Cmd
	kcmLog  *procLog
	kcmDone chan struct{}
	kcmErr  error // set before kcmDone is closed

	stopOnce sync.Once
	stopErr  error
}

// Start builds the binaries if needed (see EnsureBinaries) and starts a
// control plane on free loopback ports. ctx bounds the start only: the
// processes run until Stop, which the caller must call.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, retErr error) {
	if opts.ServiceClusterIPRange == "" {
		opts.ServiceClusterIPRange = defaultServiceClusterIPRange
	}
	binDir, err := EnsureBinaries(ctx, opts.BuildOutput)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting control plane failed: %w", context.Cause(ctx))
	}

	output := newLineWriter(opts.Output)
	etcdLog := newProcLog("etcd", output)
	apiLog := newProcLog("kube-apiserver", output)
	env := &envtest.Environment{
		BinaryAssetsDirectory:    binDir,
		UseExistingCluster:       new(false),
		ControlPlaneStartTimeout: processStartTimeout,
		ControlPlaneStopTimeout:  processStopTimeout,
	}
	// Explicit paths, so that KUBEBUILDER_ASSETS or TEST_ASSET_* in the
	// environment cannot swap in other binaries.
	env.ControlPlane.Etcd = &envtest.Etcd{
		Path: filepath.Join(binDir, "etcd"),
		Out:  etcdLog,
		Err:  etcdLog,
	}
	apiServer := env.ControlPlane.GetAPIServer()
	apiServer.Path = filepath.Join(binDir, "kube-apiserver")
	apiServer.Out, apiServer.Err = apiLog, apiLog
	apiServer.Configure().Set("service-cluster-ip-range", opts.ServiceClusterIPRange)

	if _, err := env.Start(); err != nil {
		err = errors.Join(err, env.Stop())
		return nil, fmt.Errorf("starting etcd and kube-apiserver from %s failed: %w%s%s",
			binDir, err, etcdLog.tailSection("etcd"), apiLog.tailSection("kube-apiserver"))
	}
	c := &ControlPlane{Config: env.Config, env: env, logs: []*procLog{etcdLog, apiLog}}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, c.Stop())
		}
	}()

	c.tempDir, err = os.MkdirTemp("", "ferry-testenv-")
	if err != nil {
		return nil, fmt.Errorf("creating temp folder for the admin kubeconfig failed: %w", err)
	}
	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding admin user failed: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("writing admin kubeconfig failed: %w", err)
	}
	c.AdminKubeconfig = filepath.Join(c.tempDir, "admin.kubeconfig")
	if err := os.WriteFile(c.AdminKubeconfig, kubeconfig, 0o600); err != nil {
		return nil, fmt.Errorf("writing admin kubeconfig failed: %w", err)
	}

	if opts.WithControllerManager {
		if err := c.startControllerManager(ctx, filepath.Join(binDir, "kube-controller-manager"), output); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// startControllerManager starts kube-controller-manager and waits until its
// controllers run.
func (c *ControlPlane) startControllerManager(ctx context.Context, path string, output *lineWriter) error {
	c.kcmLog = newProcLog("kube-controller-manager", output)
	c.logs = append(c.logs, c.kcmLog)
	cmd := exec.Command(path,
		"--kubeconfig="+c.AdminKubeconfig,
		"--leader-elect=false",
		"--controllers=*",
		// No serving: nothing scrapes it, and port 0 avoids port clashes
		// between test binaries.
		"--secure-port=0",
		"--use-service-account-credentials=false",
		// The default of 20 QPS makes status of thousands of Deployments
		// trail the test by minutes.
		"--kube-api-qps=500",
		"--kube-api-burst=1000",
	)
	cmd.Stdout, cmd.Stderr = c.kcmLog, c.kcmLog
	// Pdeathsig kills it when the test binary dies without calling Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting kube-controller-manager failed: %w", err)
	}
	c.kcm = cmd
	c.kcmDone = make(chan struct{})
	go func() {
		c.kcmErr = cmd.Wait()
		close(c.kcmDone)
	}()
	return c.waitControllerManager(ctx)
}

// waitControllerManager waits for the "default" ServiceAccount in namespace
// default: only kube-controller-manager's serviceaccount controller creates
// it, so its presence shows that the controllers run.
func (c *ControlPlane) waitControllerManager(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("creating client for the control plane failed: %w", err)
	}
	deadline := time.NewTimer(controllerManagerReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		_, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			lastErr = err
		}
		select {
		case <-c.kcmDone:
			return fmt.Errorf("kube-controller-manager exited before its controllers ran: %v%s",
				c.kcmErr, c.kcmLog.tailSection("kube-controller-manager"))
		case <-ctx.Done():
			return fmt.Errorf("waiting for kube-controller-manager failed: %w", context.Cause(ctx))
		case <-deadline.C:
			return fmt.Errorf("kube-controller-manager did not create ServiceAccount default/default within %s (last error: %v)%s",
				controllerManagerReadyTimeout, lastErr, c.kcmLog.tailSection("kube-controller-manager"))
		case <-tick.C:
		}
	}
}

// Stop kills kube-controller-manager, stops kube-apiserver and etcd, and
// removes their files. It also reports a kube-controller-manager that exited
// on its own before Stop. Calling it again returns the first result.
func (c *ControlPlane) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *ControlPlane) stop() error {
	var errs []error
	if c.kcm != nil {
		select {
		case <-c.kcmDone:
			errs = append(errs, fmt.Errorf("kube-controller-manager exited before Stop: %v%s",
				c.kcmErr, c.kcmLog.tailSection("kube-controller-manager")))
		default:
			// SIGKILL: it keeps no state worth a graceful shutdown.
			_ = c.kcm.Process.Kill()
			<-c.kcmDone
		}
	}
	if err := c.env.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stopping etcd and kube-apiserver failed: %w", err))
	}
	if c.tempDir != "" {
		if err := os.RemoveAll(c.tempDir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s failed: %w", c.tempDir, err))
		}
	}
	for _, l := range c.logs {
		l.flush()
	}
	return errors.Join(errs...)
}

// StartT starts a control plane with DefaultOptions for the test and stops it
// in t.Cleanup. It fails the test when the control plane cannot start; it
// never skips. Binary builds are reported on t.Output.
func StartT(t testing.TB) *ControlPlane {
	t.Helper()
	start := time.Now()
	if _, err := EnsureBinaries(t.Context(), t.Output()); err != nil {
		t.Fatalf("testenv: control-plane binaries unavailable: %v", err)
	}
	built := time.Since(start)
	start = time.Now()
	c, err := Start(t.Context(), DefaultOptions())
	if err != nil {
		t.Fatalf("testenv: control plane did not start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	t.Logf("testenv: control plane at %s ready in %s (binaries ready in %s)",
		c.Config.Host, time.Since(start).Round(time.Millisecond), built.Round(time.Millisecond))
	return c
}
