package main

import (
	"embed"
	"io/fs"
)

//go:embed web
var webFS embed.FS

// webFiles are the page's own files (index.html, app.js, snippet.html).
func webFiles() fs.FS {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err)
	}
	return sub
}
