// Package process is the module of what every roomcast program shares
// outside the contract: flagenv (a service's main, flags from ROOMCAST_*
// variables, logging, GC tuning), panicguard (panics stopped at NATS
// boundaries), health (/healthz, /readyz, /metrics) and natstest
// (in-process nats-servers for tests). It is a module of its own so that
// proto, which domain services import, needs nats.go and the standard
// library only: nats-server, zerolog and Prometheus come in here.
package process
