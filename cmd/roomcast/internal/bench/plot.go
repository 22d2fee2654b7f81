package bench

import (
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// The fan-out plot (-plot FILE.png): p99 latency (y, ms, logarithmic)
// against deliveries per second (x), one line per target, one point per
// ramp step; roomcast in blue, the Socket.IO peer in orange, Centrifugo in
// green, the -max-p99 bound dashed grey. Drawn with gonum/plot.

var plotColors = map[string]color.RGBA{
	targetRoomcast:   {0x1f, 0x77, 0xb4, 0xff},
	targetPeer:       {0xff, 0x7f, 0x0e, 0xff},
	targetCentrifugo: {0x2c, 0xa0, 0x2c, 0xff},
}

const plotW, plotH = 16 * vg.Centimeter, 10 * vg.Centimeter

// writePlot draws rs' steps as PNG, with the bound maxP99 (ms).
func writePlot(w io.Writer, rs []result, maxP99 float64) error {
	p := plot.New()
	p.Title.Text = "fan-out: p99 latency against deliveries/s"
	p.X.Label.Text = "deliveries/s"
	p.Y.Label.Text = "p99 latency (ms)"
	p.X.Min = 0
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())

	// A log axis cannot show 0 ms: latencies below 1 ms sit on 1 ms.
	yMax := maxP99 * 2
	xMax := 1.0
	for _, r := range rs {
		pts := make(plotter.XYs, len(r.Steps))
		for i, s := range r.Steps {
			pts[i].X, pts[i].Y = s.DeliveriesPerSec(), math.Max(ms(s.Latency.P99), 1)
			xMax, yMax = math.Max(xMax, pts[i].X), math.Max(yMax, pts[i].Y)
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		c, ok := plotColors[r.Target]
		if !ok {
			c = color.RGBA{A: 0xff}
		}
		l.Color, sc.Color, sc.Shape = c, c, draw.CircleGlyph{}
		p.Add(l, sc)
		p.Legend.Add(r.Target, l, sc)
	}
	bound, err := plotter.NewLine(plotter.XYs{{X: 0, Y: maxP99}, {X: xMax, Y: maxP99}})
	if err != nil {
		return err
	}
	bound.Color = color.RGBA{0xb0, 0xb0, 0xb0, 0xff}
	bound.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(bound)
	p.Legend.Add("max p99", bound)
	p.Y.Min, p.Y.Max = 1, math.Pow(10, math.Ceil(math.Log10(yMax)))

	wt, err := p.WriterTo(plotW, plotH, "png")
	if err != nil {
		return err
	}
	_, err = wt.WriteTo(w)
	return err
}
