// Package gitserver serves real git repositories over smart HTTP on
// 127.0.0.1, for tests and demos that need a git remote to pull from.
//
// It runs the git CLI: `git http-backend` behind net/http/cgi serves bare
// repositories, and each Repo has a working clone that commits and pushes to
// its bare repository over that same HTTP endpoint. Every git command runs
// hermetically: no system or user configuration, a private HOME, and no
// prompts.
//
// Each operation comes in two forms, one implementation:
//
//	New(t)               NewServer(root) (*Server, error) and Close
//	Server.NewRepo(t, …) Server.CreateRepo(…) (*Repo, error)
//	Repo.WriteFile(t, …) Repo.SetFile(…) error
//	Repo.Remove(t, …)    Repo.DeleteFile(…) error
//	Repo.Commit(t, …)    Repo.CommitAndPush(…) (string, error)
//	Repo.Head(t)         Repo.HeadCommit() (string, error)
//
// The forms taking a testing.TB fail the test on error.
//
// It offers no authentication, TLS or webhooks, and only the main branch.
package gitserver
