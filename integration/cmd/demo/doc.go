// Command demo runs ferry's main job on embedded defaults; see package
// integration/demo. `go tool task demo` runs it.
package main
