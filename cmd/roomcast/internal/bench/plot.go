package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
)

// The fan-out plot (-plot FILE.png): p99 latency (y, ms, logarithmic)
// against deliveries per second (x), one line per target, one point per ramp step;
// roomcast in blue, the Socket.IO peer in orange, Centrifugo in green, the
// 100 ms bound dashed grey. Drawn
// with the standard library alone: tick labels use a 3×5 digit font.

var plotColors = map[string]color.RGBA{
	targetRoomcast:   {0x1f, 0x77, 0xb4, 0xff},
	targetPeer:       {0xff, 0x7f, 0x0e, 0xff},
	targetCentrifugo: {0x2c, 0xa0, 0x2c, 0xff},
}

const (
	plotW, plotH = 640, 400
	plotMargin   = 48
)

// writePlot draws rs' steps as PNG.
func writePlot(w io.Writer, rs []result, maxP99 float64) error {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	xMax, yMax := 1.0, maxP99*2
	for _, r := range rs {
		for _, s := range r.Steps {
			xMax = math.Max(xMax, s.DeliveriesPerSec())
			yMax = math.Max(yMax, ms(s.Latency.P99))
		}
	}
	// x linear from 0; y logarithmic from 1 ms to the next power of ten
	xMax = niceCeil(xMax)
	decades := math.Ceil(math.Log10(yMax))
	x0, y0, x1, y1 := plotMargin, plotH-plotMargin, plotW-plotMargin, plotMargin/2
	px := func(v float64) int { return x0 + int(v/xMax*float64(x1-x0)) }
	py := func(v float64) int {
		l := math.Log10(math.Max(v, 1)) / decades
		return y0 - int(l*float64(y0-y1))
	}
	black := color.RGBA{0, 0, 0, 0xff}
	grey := color.RGBA{0xb0, 0xb0, 0xb0, 0xff}
	line(img, x0, y0, x1, y0, black)
	line(img, x0, y0, x0, y1, black)
	for i := 0; i <= 4; i++ {
		xv := xMax * float64(i) / 4
		label := fmt.Sprintf("%.0f", xv)
		line(img, px(xv), y0, px(xv), y0+4, black)
		digits(img, px(xv)-4*len(label), y0+8, label, black)
	}
	for d := 0.0; d <= decades; d++ {
		yv := math.Pow(10, d)
		label := fmt.Sprintf("%.0f", yv)
		line(img, x0-4, py(yv), x0, py(yv), black)
		digits(img, x0-6-8*len(label), py(yv)-4, label, black)
	}
	for x := x0; x < x1; x += 8 {
		line(img, x, py(maxP99), x+4, py(maxP99), grey)
	}
	for _, r := range rs {
		c, ok := plotColors[r.Target]
		if !ok {
			c = black
		}
		for i, s := range r.Steps {
			x, y := px(s.DeliveriesPerSec()), py(ms(s.Latency.P99))
			for d := -2; d <= 2; d++ {
				line(img, x-2, y+d, x+2, y+d, c)
			}
			if i > 0 {
				p := r.Steps[i-1]
				line(img, px(p.DeliveriesPerSec()), py(ms(p.Latency.P99)), x, y, c)
			}
		}
	}
	return png.Encode(w, img)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// line draws with Bresenham's algorithm.
func line(img *image.RGBA, xa, ya, xb, yb int, c color.RGBA) {
	dx, dy := abs(xb-xa), -abs(yb-ya)
	sx, sy := sign(xb-xa), sign(yb-ya)
	e := dx + dy
	for {
		img.SetRGBA(xa, ya, c)
		if xa == xb && ya == yb {
			return
		}
		e2 := 2 * e // both tests read the error from before the step
		if e2 >= dy {
			e += dy
			xa += sx
		}
		if e2 <= dx {
			e += dx
			ya += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

// font3x5 holds the digits, 5 rows of 3 bits each.
var font3x5 = [10][5]uint8{
	{7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
	{7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7},
}

// digits writes a number at (x, y), each digit 3×5 pixels scaled by 2.
func digits(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range s {
		if r < '0' || r > '9' {
			x += 8
			continue
		}
		for row, bitsRow := range font3x5[r-'0'] {
			for col := 0; col < 3; col++ {
				if bitsRow&(4>>col) != 0 {
					for d := 0; d < 4; d++ {
						img.SetRGBA(x+2*col+d%2, y+2*row+d/2, c)
					}
				}
			}
		}
		x += 8
	}
}
