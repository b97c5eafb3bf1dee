// Command plot draws the figures of a `make bench` run from its JSON: the
// unavailable pods over time, one line per mode, in one panel per group of
// modes (<out>); the wall time of every mode as grouped bars, stsroller beside
// the built-in with the same b, the ideal marked and the range of the runs
// (<out without .png>-bars.png); and, with the footprint at scale, the sync
// duration against the StatefulSet's size (<out without .png>-sync.png).
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
	"image/color"
	"log"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
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
	Stamp   string   `json:"stamp"`
	Commit  string   `json:"commit"`
	Dirty   []string `json:"dirty"`
	Results []struct {
		Name       string  `json:"name"`
		Scenario   string  `json:"scenario"`
		Group      string  `json:"group"`
		Controller string  `json:"controller"`
		Pods       int     `json:"pods"`
		Sets       int     `json:"statefulsets"`
		B          int     `json:"max_unavailable"`
		Completed  bool    `json:"completed"`
		Wall       float64 `json:"wall_seconds"`
		WallMin    float64 `json:"wall_seconds_min"`
		WallMax    float64 `json:"wall_seconds_max"`
		Runs       int     `json:"runs"`
		Ideal      float64 `json:"ideal_seconds"`
		Series     []struct {
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
	if err := bars(&rep, strings.TrimSuffix(*out, ".png")+"-bars.png"); err != nil {
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

// barPanel is one panel of the bars: the modes of one group and size, by
// category (a b, with the PDB or broken pods that tell modes apart).
type barPanel struct {
	title string
	cats  []string
	ours  []int // index into Results per category, -1: none
	built []int
}

// bars draws the wall time of every mode as grouped bars, one panel per
// group and size: stsroller beside the built-in of the same b, the ideal as
// a dashed tick over each pair, the range of the runs as a whisker, the
// median's seconds on top.
func bars(rep *report, out string) error {
	var panels []*barPanel
	byTitle := map[string]*barPanel{}
	for i, r := range rep.Results {
		title := fmt.Sprintf("%s, N=%d", r.Group, r.Pods)
		if r.Sets > 1 {
			title = fmt.Sprintf("%s, %d x %d pods", r.Group, r.Sets, r.Pods)
		}
		p := byTitle[title]
		if p == nil {
			p = &barPanel{title: title}
			byTitle[title] = p
			panels = append(panels, p)
		}
		// The category: b, and what of the scenario the title does not say.
		var extra []string
		for _, f := range strings.Fields(r.Scenario) {
			if strings.HasPrefix(f, "pdb=") || strings.HasPrefix(f, "broken=") {
				extra = append(extra, f)
			}
		}
		cat := strings.Join(append([]string{fmt.Sprintf("b=%d", r.B)}, extra...), " ")
		j := slices.Index(p.cats, cat)
		if j < 0 {
			p.cats = append(p.cats, cat)
			p.ours, p.built = append(p.ours, -1), append(p.built, -1)
			j = len(p.cats) - 1
		}
		if r.Controller == "built-in" {
			p.built[j] = i
		} else {
			p.ours[j] = i
		}
	}
	if len(panels) == 0 {
		panels = []*barPanel{{title: "no results", cats: []string{"-"}, ours: []int{-1}, built: []int{-1}}}
	}
	const cols = 2
	rows := (len(panels) + cols - 1) / cols
	const w, h = 6 * vg.Inch, 3.4 * vg.Inch
	img := vgimg.New(w*cols, h*vg.Length(rows))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadX: vg.Points(10), PadY: vg.Points(10)}
	plots := make([][]*plot.Plot, rows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
	}
	commit := rep.Commit
	if len(rep.Dirty) > 0 {
		commit += " DIRTY"
	}
	for n, bp := range panels {
		p, err := barPlot(rep, bp, commit)
		if err != nil {
			return err
		}
		plots[n/cols][n%cols] = p
	}
	canvases := plot.Align(plots, tiles, dc)
	for r := range plots {
		for c := range plots[r] {
			if plots[r][c] != nil {
				plots[r][c].Draw(canvases[r][c])
			}
		}
	}
	return writePNG(img, out)
}

var (
	oursColor    = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	builtinColor = color.RGBA{R: 255, G: 127, B: 14, A: 255}
)

func barPlot(rep *report, bp *barPanel, commit string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("wall time: %s (%s, %s)", bp.title, rep.Stamp, commit)
	p.Y.Label.Text = "seconds (median of the runs)"
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	const bw = 22
	m := &barMarks{width: vg.Points(bw)}
	for side, idx := range [][]int{bp.ours, bp.built} {
		vals := make(plotter.Values, len(idx))
		for j, i := range idx {
			if i < 0 {
				continue
			}
			r := rep.Results[i]
			vals[j] = r.Wall
			m.add(j, vg.Points(bw*(float64(side)-0.5)), r.Wall, r.WallMin, r.WallMax, r.Runs, r.Completed, r.Ideal)
		}
		b, err := plotter.NewBarChart(vals, vg.Points(bw))
		if err != nil {
			return nil, err
		}
		b.LineStyle.Width = 0
		b.Color = []color.Color{oursColor, builtinColor}[side]
		b.Offset = vg.Points(bw * (float64(side) - 0.5))
		p.Add(b)
		p.Legend.Add([]string{"stsroller", "built-in"}[side], b)
	}
	p.Add(m)
	p.Legend.Add("ideal", &plotter.Line{LineStyle: idealStyle})
	p.Add(plotter.NewGrid())
	// Under each pair, stsroller's time over the built-in's.
	names := make([]string, len(bp.cats))
	for j, cat := range bp.cats {
		names[j] = cat
		if o, b := bp.ours[j], bp.built[j]; o >= 0 && b >= 0 && rep.Results[o].Completed && rep.Results[b].Completed && rep.Results[b].Wall > 0 {
			names[j] += fmt.Sprintf("\nstsroller / built-in %.2f", rep.Results[o].Wall/rep.Results[b].Wall)
		}
	}
	p.NominalX(names...)
	p.Y.Min = 0
	return p, nil
}

var idealStyle = draw.LineStyle{Color: color.Black, Width: vg.Points(1.5), Dashes: []vg.Length{vg.Points(4), vg.Points(2)}}

// barMarks draws, over the bars, the range of the runs, the median's
// seconds and the ideal.
type barMarks struct {
	width vg.Length
	marks []barMark
}

type barMark struct {
	cat                 int
	offset              vg.Length
	wall, lo, hi, ideal float64
	runs                int
	completed           bool
}

func (m *barMarks) add(cat int, offset vg.Length, wall, lo, hi float64, runs int, completed bool, ideal float64) {
	m.marks = append(m.marks, barMark{cat: cat, offset: offset, wall: wall, lo: lo, hi: hi, runs: runs, completed: completed, ideal: ideal})
}

func (m *barMarks) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	sty := plt.X.Tick.Label
	sty.Font.Size = vg.Points(8)
	sty.XAlign, sty.YAlign = draw.XCenter, draw.YBottom
	whisker := draw.LineStyle{Color: color.Black, Width: vg.Points(1)}
	for _, k := range m.marks {
		x := trX(float64(k.cat)) + k.offset
		top := k.wall
		if k.runs > 1 && k.hi > k.lo {
			c.StrokeLine2(whisker, x, trY(k.lo), x, trY(k.hi))
			c.StrokeLine2(whisker, x-m.width/4, trY(k.lo), x+m.width/4, trY(k.lo))
			c.StrokeLine2(whisker, x-m.width/4, trY(k.hi), x+m.width/4, trY(k.hi))
			top = max(top, k.hi)
		}
		label := strconv.FormatFloat(k.wall, 'f', 1, 64)
		if !k.completed {
			label = "never"
		}
		c.FillText(sty, vg.Point{X: x, Y: trY(top) + vg.Points(2)}, label)
		if k.ideal > 0 {
			// Across the pair: the ideal is the scenario's, the same for both.
			mid := trX(float64(k.cat))
			c.StrokeLine2(idealStyle, mid-m.width*1.2, trY(k.ideal), mid+m.width*1.2, trY(k.ideal))
		}
	}
}

func (m *barMarks) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax = math.Inf(1), math.Inf(-1)
	for _, k := range m.marks {
		xmin, xmax = min(xmin, float64(k.cat)), max(xmax, float64(k.cat))
		// Room above the highest bar for its label and the legend.
		ymax = max(ymax, 1.35*max(k.wall, k.hi, k.ideal))
	}
	if len(m.marks) == 0 {
		return 0, 0, 0, 1
	}
	return xmin, xmax, 0, ymax
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
