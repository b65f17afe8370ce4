package main

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

var palette = []color.Color{
	color.RGBA{R: 214, G: 39, B: 40, A: 255},
	color.RGBA{R: 31, G: 119, B: 180, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255},
	color.RGBA{R: 148, G: 103, B: 189, A: 255},
}

func line(p *plot.Plot, name string, i int, xy plotter.XYs) error {
	l, err := plotter.NewLine(xy)
	if err != nil {
		return err
	}
	l.Color = palette[i%len(palette)]
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// saveStacked writes plots stacked vertically into one SVG.
func saveStacked(path string, w, h vg.Length, plots ...*plot.Plot) error {
	c := vgsvg.New(w, h*vg.Length(len(plots)))
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Points(10)}
	grid := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		grid[i] = []*plot.Plot{p}
	}
	canv := plot.Align(grid, tiles, dc)
	for i, p := range plots {
		p.Draw(canv[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = c.WriteTo(f)
	return err
}

func plotSeed(r SeedResult, path string) error {
	rss := plot.New()
	what, capName := "sink", "sink capacity"
	if r.Downstream == "kafka" {
		what, capName = "output topic", "output capacity"
	}
	rss.Title.Text = fmt.Sprintf("seed: consumer RSS (input %.0f msg/s × %d KiB, %s %.0f/s)", r.InputRate, r.MessageBytes>>10, capName, r.SinkCapacityPerS)
	rss.X.Label.Text = "time (s)"
	rss.Y.Label.Text = "RSS (MiB)"
	rss.Legend.Top, rss.Legend.Left = true, true
	tp := plot.New()
	tp.Title.Text = "seed: " + what + " throughput (msgs/s, 1 s window)"
	tp.X.Label.Text = "time (s)"
	tp.Y.Label.Text = "msgs/s"
	tp.Legend.Top, tp.Legend.Left = true, true
	for i, run := range r.Runs {
		var a, b plotter.XYs
		for j, s := range run.Samples {
			a = append(a, plotter.XY{X: s.T, Y: mib(s.RSS)})
			if j >= 2 { // 2 samples = 1 s
				prev := run.Samples[j-2]
				if dt := s.T - prev.T; dt > 0 {
					b = append(b, plotter.XY{X: s.T, Y: float64(s.Processed-prev.Processed) / dt})
				}
			}
		}
		label := run.Name
		if run.BudgetBytes > 0 {
			label += fmt.Sprintf(" (budget %d MiB)", run.BudgetBytes>>20)
		}
		if run.KilledByRSSCap {
			label += " [killed at RSS cap]"
		}
		if err := line(rss, label, i, a); err != nil {
			return err
		}
		if len(b) > 1 {
			if err := line(tp, label, i, b); err != nil {
				return err
			}
		}
	}
	capLine := plotter.XYs{{X: 0, Y: r.SinkCapacityPerS}, {X: r.Duration, Y: r.SinkCapacityPerS}}
	if err := line(tp, capName, 2, capLine); err != nil {
		return err
	}
	return saveStacked(path, 8*vg.Inch, 4*vg.Inch, rss, tp)
}

func plotE2E(r E2EResult, path string) error {
	p := plot.New()
	p.Title.Text = "e2e: consume throughput, bare Poll loop vs sluice (msgs/s)"
	p.Y.Label.Text = "msgs/s"
	w := vg.Points(20)
	var bare, sl plotter.Values
	var names []string
	for _, row := range r.Results {
		bare = append(bare, row.BareMsgsPerS)
		sl = append(sl, row.SluiceMsgsPS)
		names = append(names, fmt.Sprintf("%d B (ratio %.2f)", row.MessageBytes, row.Ratio))
	}
	b1, err := plotter.NewBarChart(bare, w)
	if err != nil {
		return err
	}
	b1.Color = palette[0]
	b1.Offset = -w / 2
	b2, err := plotter.NewBarChart(sl, w)
	if err != nil {
		return err
	}
	b2.Color = palette[1]
	b2.Offset = w / 2
	p.Add(b1, b2)
	p.Legend.Add("bare confluent Poll", b1)
	p.Legend.Add("sluice Source→Map→Sink", b2)
	p.Legend.Top = true
	p.NominalX(names...)
	return p.Save(8*vg.Inch, 4*vg.Inch, path)
}

func plotSweep(r SweepResult, path string) error {
	p := plot.New()
	p.Title.Text = "sweep: throughput vs peak RSS (labels: budget MiB)"
	p.X.Label.Text = "peak RSS (MiB)"
	p.Y.Label.Text = "msgs/s"
	p.Legend.Top = true
	bySize := map[int]plotter.XYs{}
	labels := map[int][]string{}
	var sizes []int
	for _, row := range r.Results {
		if _, ok := bySize[row.MessageBytes]; !ok {
			sizes = append(sizes, row.MessageBytes)
		}
		bySize[row.MessageBytes] = append(bySize[row.MessageBytes], plotter.XY{X: mib(row.PeakRSS), Y: row.MsgsPerS})
		labels[row.MessageBytes] = append(labels[row.MessageBytes], fmt.Sprint(row.BudgetBytes>>20))
	}
	for i, sz := range sizes {
		lp, sc, err := plotter.NewLinePoints(bySize[sz])
		if err != nil {
			return err
		}
		lp.Color, sc.Color = palette[i%len(palette)], palette[i%len(palette)]
		p.Add(lp, sc)
		p.Legend.Add(fmt.Sprintf("%d B messages", sz), lp, sc)
		lb, err := plotter.NewLabels(plotter.XYLabels{XYs: bySize[sz], Labels: labels[sz]})
		if err == nil {
			p.Add(lb)
		}
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// plotScale draws the group's lag over time per run (replica count, and the rolling restart),
// and every process slot's RSS (one colour per run, one dash pattern per slot).
func plotScale(r ScaleResult, path string) error {
	lag := plot.New()
	lag.Title.Text = fmt.Sprintf("scale: group lag (input %.0f msg/s × %d KiB, %.0f/s per process)", r.InputRate, r.MessageBytes>>10, r.SinkCapacityPerS)
	lag.X.Label.Text = "time (s)"
	lag.Y.Label.Text = "lag (messages)"
	lag.Legend.Top, lag.Legend.Left = true, true
	rss := plot.New()
	rss.Title.Text = fmt.Sprintf("scale: RSS per process (budget %d MiB each)", r.BudgetBytes>>20)
	rss.X.Label.Text = "time (s)"
	rss.Y.Label.Text = "RSS (MiB)"
	rss.Legend.Top, rss.Legend.Left = true, true
	runs := append([]ScaleRun(nil), r.Runs...)
	names := []string{}
	for _, run := range r.Runs {
		names = append(names, fmt.Sprintf("%d process(es), slope %+.0f/s", run.Replicas, run.LagSlope))
	}
	if r.Rolling != nil {
		runs = append(runs, r.Rolling.ScaleRun)
		names = append(names, fmt.Sprintf("3 static, rolling restart (%d restarts, %d moved)", r.Rolling.Restarts, r.Rolling.PartitionsMoved))
	}
	for i, run := range runs {
		var l plotter.XYs
		var perSlot []plotter.XYs
		for _, s := range run.Samples {
			l = append(l, plotter.XY{X: s.T, Y: float64(s.Lag)})
			for j, b := range s.RSS {
				for len(perSlot) <= j {
					perSlot = append(perSlot, nil)
				}
				perSlot[j] = append(perSlot[j], plotter.XY{X: s.T, Y: mib(b)})
			}
		}
		if len(l) > 1 {
			if err := line(lag, names[i], i, l); err != nil {
				return err
			}
		}
		for j, xy := range perSlot {
			if len(xy) < 2 {
				continue
			}
			ln, err := plotter.NewLine(xy)
			if err != nil {
				return err
			}
			ln.Color = palette[i%len(palette)]
			ln.Width = vg.Points(1)
			ln.Dashes = [][]vg.Length{nil, {vg.Points(4), vg.Points(2)}, {vg.Points(1), vg.Points(2)}}[j%3]
			rss.Add(ln)
			if j == 0 {
				rss.Legend.Add(names[i], ln)
			}
		}
	}
	limit := plotter.XYs{{X: 0, Y: mib(r.BudgetBytes) + 100}, {X: r.Duration, Y: mib(r.BudgetBytes) + 100}}
	ln, err := plotter.NewLine(limit)
	if err != nil {
		return err
	}
	ln.Color = color.Gray{Y: 128}
	ln.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
	rss.Add(ln)
	rss.Legend.Add("budget + 100 MiB", ln)
	return saveStacked(path, 8*vg.Inch, 4*vg.Inch, lag, rss)
}

// plotEOS draws each run's throughput (the pre-filled backlog) and its paced latency (p50,
// p99) as bars, one per run.
func plotEOS(r EOSResult, path string) error {
	tp := plot.New()
	tp.Title.Text = fmt.Sprintf("eos: copy pipeline throughput (%d × %d B pre-filled, %d partitions)", r.Records, r.MessageBytes, r.Partitions)
	tp.Y.Label.Text = "msgs/s"
	lat := plot.New()
	lat.Title.Text = fmt.Sprintf("eos: latency, input timestamp → read_committed reader (input paced at %.0f msg/s)", r.LatencyRate)
	lat.Y.Label.Text = "ms"
	lat.Legend.Top = true
	w := vg.Points(20)
	var rates, p50, p99 plotter.Values
	var names []string
	for _, run := range r.Runs {
		rates = append(rates, run.MsgsPerS)
		p50 = append(p50, run.P50LatencyMs)
		p99 = append(p99, run.P99LatencyMs)
		names = append(names, fmt.Sprintf("%s, %.0f ms (dup %d)", run.Mode, run.CommitIntervalMs, run.Duplicates))
	}
	if len(names) == 0 {
		names, rates, p50, p99 = []string{"no runs"}, plotter.Values{0}, plotter.Values{0}, plotter.Values{0}
	}
	b, err := plotter.NewBarChart(rates, w)
	if err != nil {
		return err
	}
	b.Color = palette[1]
	tp.Add(b)
	tp.NominalX(names...)
	for i, v := range []plotter.Values{p50, p99} {
		bc, err := plotter.NewBarChart(v, w)
		if err != nil {
			return err
		}
		bc.Color = palette[i*2]
		bc.Offset = w * vg.Length(2*i-1) / 2
		lat.Add(bc)
		lat.Legend.Add([]string{"p50", "p99"}[i], bc)
	}
	lat.NominalX(names...)
	return saveStacked(path, 8*vg.Inch, 4*vg.Inch, tp, lat)
}
