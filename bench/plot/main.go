// Command plot draws the figures of a `make bench` run from its JSON: the
// unavailable pods over time, one line per mode, in one panel per group of
// modes (<out>), and, with the footprint at scale, the sync duration against
// the StatefulSet's size (<out without .png>-sync.png).
//
//	go run . -in bench/results/STAMP.json -out bench/results/STAMP.png
//
// It is a module of its own so that gonum.org/v1/plot stays out of the
// controller's go.mod.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// report is the part of the benchmark's JSON that the plots need.
type report struct {
	Stamp   string `json:"stamp"`
	Results []struct {
		Name   string `json:"name"`
		Group  string `json:"group"`
		Pods   int    `json:"pods"`
		Sets   int    `json:"statefulsets"`
		Series []struct {
			T float64 `json:"t"`
			U int     `json:"unavailable"`
		} `json:"series"`
	} `json:"results"`
	Scale *struct {
		SyncBySize []struct {
			Pods int     `json:"pods"`
			P50  float64 `json:"p50_ms"`
			P99  float64 `json:"p99_ms"`
		} `json:"sync_by_size"`
	} `json:"scale"`
}

func main() {
	in := flag.String("in", "", "the benchmark's JSON")
	out := flag.String("out", "", "the PNG to write")
	flag.Parse()
	if *in == "" || *out == "" {
		log.Fatal("usage: plot -in RESULTS.json -out RESULTS.png")
	}
	raw, err := os.ReadFile(*in)
	if err != nil {
		log.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(raw, &rep); err != nil {
		log.Fatalf("%s: %v", *in, err)
	}
	if err := unavailable(&rep, *out); err != nil {
		log.Fatal(err)
	}
	if rep.Scale != nil && len(rep.Scale.SyncBySize) > 0 {
		if err := syncBySize(&rep, strings.TrimSuffix(*out, ".png")+"-sync.png"); err != nil {
			log.Fatal(err)
		}
	}
}

// unavailable draws one panel per group (and size), one step line per mode.
func unavailable(rep *report, out string) error {
	panels := map[string][]int{}
	var keys []string
	for i, r := range rep.Results {
		k := fmt.Sprintf("%s, N=%d", r.Group, r.Pods)
		if r.Sets > 1 {
			k = fmt.Sprintf("%s, %d x %d pods", r.Group, r.Sets, r.Pods)
		}
		if _, ok := panels[k]; !ok {
			keys = append(keys, k)
		}
		panels[k] = append(panels[k], i)
	}
	if len(keys) == 0 {
		keys = []string{"no results"}
	}
	rows := len(keys)
	const w, h = 10 * vg.Inch, 3.2 * vg.Inch
	img := vgimg.New(w, h*vg.Length(rows))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadX: vg.Points(4)}
	plots := make([][]*plot.Plot, rows)
	for row, k := range keys {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("unavailable pods over time: %s (%s)", k, rep.Stamp)
		p.X.Label.Text = "seconds since the new revision"
		p.Y.Label.Text = "unavailable pods"
		p.Legend.Top = true
		p.Legend.TextStyle.Font.Size = vg.Points(7)
		for n, i := range panels[k] {
			r := rep.Results[i]
			pts := make(plotter.XYs, 0, 2*len(r.Series))
			for j, s := range r.Series {
				// A step line: hold the previous value until this point.
				if j > 0 {
					pts = append(pts, plotter.XY{X: s.T, Y: pts[len(pts)-1].Y})
				}
				pts = append(pts, plotter.XY{X: s.T, Y: float64(s.U)})
			}
			if len(pts) == 0 {
				continue
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(n)
			l.Width = vg.Points(1.2)
			p.Add(l)
			p.Legend.Add(strings.TrimPrefix(r.Name, r.Group+" "), l)
		}
		p.Add(plotter.NewGrid())
		plots[row] = []*plot.Plot{p}
	}
	canvases := plot.Align(plots, tiles, dc)
	for row := range plots {
		plots[row][0].Draw(canvases[row][0])
	}
	return writePNG(img, out)
}

// syncBySize draws sync p50 and p99 against the StatefulSet's pods.
func syncBySize(rep *report, out string) error {
	s := rep.Scale.SyncBySize
	sort.Slice(s, func(i, j int) bool { return s[i].Pods < s[j].Pods })
	p := plot.New()
	p.Title.Text = "stsroller sync duration against StatefulSet size (" + rep.Stamp + ")"
	p.X.Label.Text = "pods of the StatefulSet"
	p.Y.Label.Text = "sync duration (ms)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p50 := make(plotter.XYs, len(s))
	p99 := make(plotter.XYs, len(s))
	for i, z := range s {
		p50[i] = plotter.XY{X: float64(z.Pods), Y: z.P50}
		p99[i] = plotter.XY{X: float64(z.Pods), Y: z.P99}
	}
	for i, series := range []struct {
		name string
		pts  plotter.XYs
	}{{"p50", p50}, {"p99", p99}} {
		l, pts, err := plotter.NewLinePoints(series.pts)
		if err != nil {
			return err
		}
		l.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
		p.Add(l, pts)
		p.Legend.Add(series.name, l, pts)
	}
	p.Add(plotter.NewGrid())
	return p.Save(8*vg.Inch, 4*vg.Inch, out)
}

func writePNG(img *vgimg.Canvas, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
