package testenv

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// logTailSize is how much of each process's output is kept for errors.
const logTailSize = 64 << 10

// procLog collects one process's output: it keeps the last logTailSize bytes
// for error messages and copies whole lines, prefixed with the process name,
// to a shared writer.
type procLog struct {
	name string
	out  *lineWriter // nil when the output is discarded

	mu      sync.Mutex
	tail    []byte
	partial []byte // an unfinished line not yet copied to out
}

// lineWriter serialises the lines of several processes onto one writer.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// newLineWriter returns nil when w discards everything.
func newLineWriter(w io.Writer) *lineWriter {
	if w == nil || w == io.Discard {
		return nil
	}
	return &lineWriter{w: w}
}

func newProcLog(name string, out *lineWriter) *procLog {
	return &procLog{name: name, out: out}
}

// Write never fails, so that a broken log writer cannot stop a process.
func (p *procLog) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tail = append(p.tail, b...)
	if len(p.tail) > 2*logTailSize {
		p.tail = p.tail[:copy(p.tail, p.tail[len(p.tail)-logTailSize:])]
	}
	if p.out == nil {
		return len(b), nil
	}
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.writeLine(p.partial[:i+1])
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

func (p *procLog) writeLine(line []byte) {
	var buf []byte
	if p.name != "" {
		buf = append(buf, p.name...)
		buf = append(buf, ": "...)
	}
	buf = append(buf, line...)
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	_, _ = p.out.w.Write(buf)
}

// flush copies an unfinished last line, once the process has exited.
func (p *procLog) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out != nil && len(p.partial) > 0 {
		p.writeLine(append(p.partial, '\n'))
		p.partial = nil
	}
}

// tailSection formats the kept output for the end of an error message.
func (p *procLog) tailSection(what string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	tail := p.tail
	if len(tail) > logTailSize {
		tail = tail[len(tail)-logTailSize:]
		// Start at a whole line.
		if i := bytes.IndexByte(tail, '\n'); i >= 0 {
			tail = tail[i+1:]
		}
	}
	if len(bytes.TrimSpace(tail)) == 0 {
		return fmt.Sprintf("\n(%s wrote no output)", what)
	}
	return fmt.Sprintf("\n--- last output of %s ---\n%s", what, bytes.TrimRight(tail, "\n"))
}
