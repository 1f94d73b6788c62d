const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1976d2", "#e65100", "#2e7d32", "#6a1b9a"];
function node(tag, attrs, parent) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (parent) parent.appendChild(n);
  return n;
}
function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(1) : v.toPrecision(2);
}
function render({ model, el }) {
  el.classList.add("maas-chart");
  function draw() {
    el.textContent = "";
    const plots = model.get("plots");
    const W = 300, H = 120, L = 44, R = 8, T = 22, B = 18;
    const svg = node("svg", { width: W * plots.length, height: H,
                             viewBox: `0 0 ${W * plots.length} ${H}` }, el);
    plots.forEach((plot, i) => {
      const g = node("g", { class: "maas-plot", "data-title": plot.title,
                            transform: `translate(${i * W},0)` }, svg);
      const title = node("text", { x: L, y: 13, class: "maas-chart-title" }, g);
      title.textContent = plot.title;
      const all = plot.series.flatMap(s => s.points);
      node("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "maas-chart-frame" }, g);
      if (!all.length) {
        const t = node("text", { x: L + 8, y: T + 24, class: "maas-chart-empty" }, g);
        t.textContent = model.get("waiting");
        return;
      }
      const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
      const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
      const y0 = Math.min(0, ...ys);
      const top = Math.max(0, ...ys);
      const y1 = top > 0 ? top * 1.1 : (y0 < 0 ? 0 : 1);  // all zero: still a scale
      const px = x => L + (x - x0) / (x1 - x0) * (W - L - R);
      const py = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
      for (const [v, y] of [[y0, py(y0)], [y1, py(y1)]]) {
        const t = node("text", { x: L - 4, y: y + 4, "text-anchor": "end", class: "maas-chart-axis" }, g);
        t.textContent = fmt(v);
      }
      const span = node("text", { x: W - R, y: H - 4, "text-anchor": "end", class: "maas-chart-axis" }, g);
      span.textContent = `last ${Math.round(x1 - x0)} ${plot.x_unit || "s"}`;
      plot.series.forEach((s, j) => {
        const c = COLORS[j % COLORS.length];
        node("polyline", { class: "maas-series", "data-name": s.name, fill: "none", stroke: c,
          "stroke-width": 1.6, points: s.points.map(p => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ") }, g);
        const last = s.points[s.points.length - 1];
        if (last) {  // the newest point as a dot: one point alone draws no line
          node("circle", { cx: px(last[0]).toFixed(1), cy: py(last[1]).toFixed(1), r: 2.5,
                           fill: c, class: "maas-last" }, g);
        }
        const lab = node("text", { x: L + 6 + j * 86, y: T + 12, fill: c, class: "maas-chart-legend" }, g);
        lab.textContent = last ? `${s.name} ${fmt(last[1])}` : s.name;
      });
    });
  }
  draw();
  model.on("change:plots", draw);
}
export default { render };
