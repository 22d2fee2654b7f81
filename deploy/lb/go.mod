module github.com/roomcast/roomcast/deploy/lb

go 1.26.0
