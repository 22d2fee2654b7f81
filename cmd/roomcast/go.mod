module github.com/roomcast/roomcast/cmd/roomcast

go 1.26.8
