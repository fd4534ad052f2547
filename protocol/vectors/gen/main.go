// Command gen writes spec/vectors/vectors.json. `make vectors` runs it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/opentrack/opentrack/protocol/vectors"
)

func main() {
	out := flag.String("o", "spec/vectors/vectors.json", "output file")
	flag.Parse()
	f, err := vectors.Generate()
	if err == nil {
		var b []byte
		if b, err = vectors.Encode(f); err == nil {
			err = os.WriteFile(*out, b, 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vectors:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %d vectors to %s\n", len(f.Vectors), *out)
}
