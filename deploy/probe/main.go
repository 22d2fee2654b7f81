// Command probe is the images' health check: images built FROM scratch
// have no shell, curl or wget, so the check is this program.
//
//	probe http://127.0.0.1:8080/readyz
//
// It exits 0 when the URL answers 200 within two seconds, 1 otherwise.
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: probe URL")
		os.Exit(2)
	}
	os.Exit(probe(os.Args[1]))
}

func probe(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, url+":", resp.Status)
		return 1
	}
	return 0
}
