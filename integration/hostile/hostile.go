// Package hostile holds the repository contents ferry's tests use to try
// to take a render, and ferry with it, down.
package hostile

import (
	"fmt"
	"strings"
)

// AliasBomb is a billion-laughs YAML mapping, each line indented by
// indent: 9 levels of 9 aliases, a few hundred bytes that expand to 9^9
// strings.
func AliasBomb(indent string) string {
	var b strings.Builder
	b.WriteString(indent + "l0: &l0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for i := 1; i <= 9; i++ {
		p := fmt.Sprintf("*l%d", i-1)
		fmt.Fprintf(&b, "%sl%d: &l%d [%s]\n", indent, i, i, strings.Repeat(p+",", 8)+p)
	}
	return b.String()
}

// AliasBombConfigMap is a ConfigMap whose data is an AliasBomb.
func AliasBombConfigMap() string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n" + AliasBomb("  ")
}

// Chart returns the Chart.yaml of a chart named name.
func Chart(name string) string {
	return "apiVersion: v2\nname: " + name + "\nversion: 0.1.0\n"
}

// ValuesTemplate is a Helm template that prints every value.
const ValuesTemplate = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  v: {{ toJson .Values | quote }}\n"

// RepeatTemplate is a Helm template that asks for a 2 GB string.
const RepeatTemplate = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: repeat\ndata:\n  v: {{ repeat 2000000000 \"x\" | quote }}\n"

// EndlessTemplate is a Helm template that loops 10^12 times without
// allocating: only a timeout ends it.
const EndlessTemplate = "{{- $s := until 1000 }}{{ range until 1000000 }}{{ range $s }}{{ range $s }}{{ end }}{{ end }}{{ end }}\n"
