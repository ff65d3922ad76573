/* A small time-series line chart drawn as SVG.
 *
 * Written for this page instead of vendoring a chart library: the page needs
 * a few lines over time, and nothing here may be fetched at run time.  Only
 * SVG attributes and CSS classes are set (Cockpit's content security policy
 * refuses inline style attributes).
 */
"use strict";

(function () {
    const SVG = "http://www.w3.org/2000/svg";
    const WIDTH = 640;
    const HEIGHT = 180;
    const PAD = { left: 64, right: 12, top: 10, bottom: 24 };
    /* Points kept per series: a day at one sample every 5 s would be more
     * than a browser should draw; the newest ones matter. */
    const MAX_POINTS = 2000;

    function svg(tag, attrs, parent) {
        const el = document.createElementNS(SVG, tag);
        for (const [name, value] of Object.entries(attrs || {}))
            el.setAttribute(name, String(value));
        if (parent)
            parent.appendChild(el);
        return el;
    }

    function timeLabel(ms) {
        const d = new Date(ms);
        return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    }

    /* A chart in `container`: `options.series` is a list of
     * {key, label, cls}; `options.format(value)` labels the y axis. */
    class TimeChart {
        constructor(container, options) {
            this.container = container;
            this.format = options.format || (v => String(v));
            this.minMax = options.minMax || 0;
            this.series = options.series.map(s => ({ ...s, points: [] }));
            this.pending = false;

            const figure = document.createElement("figure");
            figure.className = "mom-chart";
            if (options.title) {
                const caption = document.createElement("figcaption");
                caption.textContent = options.title;
                figure.appendChild(caption);
            }
            this.svg = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
                                    "aria-label": options.title || "chart" }, figure);
            this.grid = svg("g", { class: "mom-chart-grid" }, this.svg);
            this.lines = this.series.map(s => svg("polyline", { class: `mom-line ${s.cls}`, points: "" }, this.svg));
            const legend = document.createElement("ul");
            legend.className = "mom-legend";
            for (const s of this.series) {
                const item = document.createElement("li");
                const swatch = document.createElement("span");
                swatch.className = `mom-swatch ${s.cls}`;
                item.appendChild(swatch);
                item.appendChild(document.createTextNode(s.label));
                legend.appendChild(item);
            }
            figure.appendChild(legend);
            container.appendChild(figure);
            this.render();
        }

        seriesFor(key) {
            const found = this.series.find(s => s.key === key);
            if (!found)
                throw new Error(`chart has no series ${key}`);
            return found;
        }

        /* Replace a series' points ([[ms, value], ...], oldest first), keeping
         * the points added live that are newer than the last one given. */
        setHistory(key, points) {
            const s = this.seriesFor(key);
            const last = points.length ? points[points.length - 1][0] : -Infinity;
            s.points = points.concat(s.points.filter(p => p[0] > last)).slice(-MAX_POINTS);
            this.schedule();
        }

        add(key, ms, value) {
            if (typeof value !== "number" || !isFinite(value))
                return;
            const s = this.seriesFor(key);
            const n = s.points.length;
            if (n && s.points[n - 1][0] >= ms)
                return;
            s.points.push([ms, value]);
            if (s.points.length > MAX_POINTS)
                s.points.splice(0, s.points.length - MAX_POINTS);
            this.schedule();
        }

        /* Drawing waits for the next frame: many values arrive together. */
        schedule() {
            if (this.pending)
                return;
            this.pending = true;
            window.requestAnimationFrame(() => {
                this.pending = false;
                this.render();
            });
        }

        render() {
            let t0 = Infinity, t1 = -Infinity, vmax = this.minMax;
            for (const s of this.series) {
                for (const [t, v] of s.points) {
                    if (t < t0) t0 = t;
                    if (t > t1) t1 = t;
                    if (v > vmax) vmax = v;
                }
            }
            if (!isFinite(t0)) {
                t1 = Date.now();
                t0 = t1 - 60000;
            }
            if (t1 - t0 < 1000)
                t0 = t1 - 1000;
            if (vmax <= 0)
                vmax = 1;
            vmax *= 1.05;
            const plotW = WIDTH - PAD.left - PAD.right;
            const plotH = HEIGHT - PAD.top - PAD.bottom;
            const x = t => PAD.left + (t - t0) / (t1 - t0) * plotW;
            const y = v => PAD.top + plotH - v / vmax * plotH;

            this.grid.replaceChildren();
            for (const fraction of [0, 0.5, 1]) {
                const value = vmax / 1.05 * fraction;
                const yy = y(value);
                svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: yy, y2: yy }, this.grid);
                const label = svg("text", { x: PAD.left - 6, y: yy + 4, "text-anchor": "end" }, this.grid);
                label.textContent = this.format(value);
            }
            const start = svg("text", { x: PAD.left, y: HEIGHT - 6, "text-anchor": "start" }, this.grid);
            start.textContent = timeLabel(t0);
            const end = svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end" }, this.grid);
            end.textContent = timeLabel(t1);

            this.series.forEach((s, i) => {
                this.lines[i].setAttribute("points",
                    s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
                this.lines[i].setAttribute("data-points", String(s.points.length));
            });
        }
    }

    window.MomChart = { TimeChart };
})();
