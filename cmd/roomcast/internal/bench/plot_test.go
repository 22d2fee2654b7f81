package bench

import (
	"bytes"
	"image/png"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPlotDrawsEveryTarget(t *testing.T) {
	step := func(rate float64, p99 time.Duration) stepResult {
		return stepResult{Rate: rate, Duration: time.Second, Delivered: uint64(rate * 100), Latency: Summary{P99: p99}}
	}
	rs := []result{
		{Target: targetRoomcast, Steps: []stepResult{step(100, 5*time.Millisecond), step(150, 40*time.Millisecond)}},
		{Target: targetPeer, Steps: []stepResult{step(100, 30*time.Millisecond), step(150, 300*time.Millisecond)}},
		// sub-millisecond p99s sit on the log axis' 1 ms
		{Target: targetCentrifugo, Steps: []stepResult{step(100, 0), step(150, 500*time.Microsecond)}},
	}
	var b bytes.Buffer
	require.NoError(t, writePlot(&b, rs, 100))
	img, err := png.Decode(&b)
	require.NoError(t, err)
	seen := map[string]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			for name, c := range plotColors {
				if uint8(r>>8) == c.R && uint8(g>>8) == c.G && uint8(bl>>8) == c.B {
					seen[name] = true
				}
			}
		}
	}
	require.Equal(t, map[string]bool{targetRoomcast: true, targetPeer: true, targetCentrifugo: true}, seen, "every target's line is drawn")

	// A run with no steps still draws (the axes and the bound).
	b.Reset()
	require.NoError(t, writePlot(&b, []result{{Target: targetRoomcast}}, 100))
	_, err = png.Decode(&b)
	require.NoError(t, err)
}
