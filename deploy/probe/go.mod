module github.com/roomcast/roomcast/deploy/probe

go 1.26.0
