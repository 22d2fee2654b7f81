// Package flagenv binds settings to command-line flags whose defaults come
// from ROOMCAST_* environment variables, so each service reads its
// configuration in one place: flag beats environment beats built-in default.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Set is a flag set whose flags also read the environment. Bad environment
// values are collected and reported by Parse, naming the variable.
type Set struct {
	*flag.FlagSet
	errs []error
}

// New wraps fs.
func New(fs *flag.FlagSet) *Set { return &Set{FlagSet: fs} }

// String binds *p to -name and $env, default def.
func (s *Set) String(p *string, name, env, def, usage string) {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	s.StringVar(p, name, def, usage+" ($"+env+")")
}

// Int binds *p to -name and $env, default def.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	if v, ok := os.LookupEnv(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: not a whole number", env, v))
		} else {
			def = n
		}
	}
	s.IntVar(p, name, def, usage+" ($"+env+")")
}

// Bool binds *p to -name and $env, default def.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	if v, ok := os.LookupEnv(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: not true or false", env, v))
		} else {
			def = b
		}
	}
	s.BoolVar(p, name, def, usage+" ($"+env+")")
}

// Duration binds *p to -name and $env, default def.
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v, ok := os.LookupEnv(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: not a duration such as 30s or 720h", env, v))
		} else {
			def = d
		}
	}
	s.DurationVar(p, name, def, usage+" ($"+env+")")
}

// Parse parses args, first reporting the first bad environment value.
func (s *Set) Parse(args []string) error {
	if len(s.errs) > 0 {
		return s.errs[0]
	}
	return s.FlagSet.Parse(args)
}
