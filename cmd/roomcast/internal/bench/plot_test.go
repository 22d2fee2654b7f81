package bench

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
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
	require.True(t, seen[targetRoomcast] && seen[targetPeer], "both lines are drawn: %v", seen)
	require.Equal(t, 500.0, niceCeil(301))

	// a steep segment once looped forever
	canvas := image.NewRGBA(image.Rect(0, 0, 100, 100))
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		xa, ya, xb, yb := r.IntN(300)-100, r.IntN(300)-100, r.IntN(300)-100, r.IntN(300)-100
		line(canvas, xa, ya, xb, yb, color.RGBA{A: 0xff})
	}
	require.Equal(t, 20000.0, niceCeil(15000))
}
