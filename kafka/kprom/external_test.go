package kprom_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestExternalModule proves the kit is enough for a service outside this repository: it
// writes a module (example.com/mysvc) whose main is Example_service's body with that file's
// imports, requiring sluice through a replace pointing at this checkout, and builds it
// offline (GOPROXY=off, the checkout's go.sum and requirements). Go forbids importing another
// module's internal/ packages, so the build fails if the example needs one; the test also
// checks main.go imports nothing under internal/ by name.
func TestExternalModule(t *testing.T) {
	root := checkoutRoot(t)
	imports, body := exampleService(t)
	for _, imp := range imports {
		if strings.Contains(imp, "/internal/") || strings.HasSuffix(imp, "/internal") {
			t.Errorf("Example_service imports %s", imp)
		}
	}
	var main bytes.Buffer
	main.WriteString("package main\n\nimport (\n")
	for _, imp := range imports {
		main.WriteString("\t" + strconv.Quote(imp) + "\n")
	}
	main.WriteString(")\n\nfunc main() " + body + "\n")

	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var mod bytes.Buffer
	mod.WriteString("module example.com/mysvc\n\ngo 1.26.0\n\nrequire github.com/sluicehq/sluice v0.0.0\n\n")
	for _, block := range requireBlocks(string(gomod)) {
		mod.WriteString(block + "\n\n")
	}
	mod.WriteString("replace github.com/sluicehq/sluice => " + root + "\n")
	gosum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"go.mod": mod.Bytes(), "go.sum": gosum, "main.go": main.Bytes()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "mysvc"), ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of the external module: %v\n%s\n--- go.mod\n%s\n--- main.go\n%s", err, out, mod.String(), main.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "mysvc")); err != nil {
		t.Fatal(err)
	}
}

// checkoutRoot returns the directory of this module's go.mod.
func checkoutRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not in a module")
	}
	return filepath.Dir(gomod)
}

// exampleService returns the imports of example_service_test.go and Example_service's body
// (its braces included) as written.
func exampleService(t *testing.T) ([]string, string) {
	t.Helper()
	src, err := os.ReadFile("example_service_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_service_test.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var imports []string
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		imports = append(imports, p)
	}
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == "Example_service" {
			return imports, string(src[fset.Position(fn.Body.Lbrace).Offset : fset.Position(fn.Body.Rbrace).Offset+1])
		}
	}
	t.Fatal("no Example_service in example_service_test.go")
	return nil, ""
}

// requireBlocks returns the require blocks of a go.mod, "require (...)" each.
func requireBlocks(gomod string) []string {
	var blocks []string
	for rest := gomod; ; {
		i := strings.Index(rest, "\nrequire (")
		if i < 0 {
			return blocks
		}
		j := strings.Index(rest[i:], "\n)")
		blocks = append(blocks, rest[i+1:i+j+2])
		rest = rest[i+j+2:]
	}
}
