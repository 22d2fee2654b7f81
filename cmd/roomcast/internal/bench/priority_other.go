//go:build !linux

package bench

import "errors"

func lowestPriority([]int) error {
	return errors.New("lowering the workers' priority is done on Linux only")
}
