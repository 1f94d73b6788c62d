const NS = "http://www.w3.org/2000/svg";
function node(tag, attrs, parent) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (parent) parent.appendChild(n);
  return n;
}
function render({ model, el }) {
  el.classList.add("maas-lineage");
  function draw() {
    el.textContent = "";
    const nodes = model.get("nodes"), edges = model.get("edges");
    if (!nodes.length) return;
    const W = model.get("width"), H = model.get("height");
    const svg = node("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`,
                             role: "img", "aria-label": model.get("title") }, el);
    const defs = node("defs", {}, svg);
    const marker = node("marker", { id: "maas-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
    node("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#777" }, marker);
    const at = Object.fromEntries(nodes.map(n => [n.ref, n]));
    for (const e of edges) {
      const a = at[e.parent], b = at[e.child];
      if (!a || !b) continue;
      const g = node("g", { class: "maas-edge", "data-parent": e.parent, "data-child": e.child }, svg);
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
      const mx = (x1 + x2) / 2;
      node("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, fill: "none",
                     stroke: "#777", "stroke-width": 1.3, "marker-end": "url(#maas-arrow)" }, g);
      const lines = e.label.split(", ");
      lines.forEach((line, i) => {
        const t = node("text", { x: mx, y: (y1 + y2) / 2 - 6 - (lines.length - 1 - i) * 12,
          "text-anchor": "middle", class: "maas-edge-label" }, g);
        t.textContent = line;
      });
    }
    const current = model.get("current");
    for (const n of nodes) {
      const g = node("g", { class: "maas-node" + (n.ref === current ? " maas-current" : ""),
                            "data-ref": n.ref, transform: `translate(${n.x},${n.y})` }, svg);
      node("rect", { width: n.w, height: n.h, rx: 6 }, g);
      const t1 = node("text", { x: n.w / 2, y: 17, "text-anchor": "middle", class: "maas-node-ref" }, g);
      t1.textContent = n.ref;
      const t2 = node("text", { x: n.w / 2, y: 32, "text-anchor": "middle", class: "maas-node-sub" }, g);
      t2.textContent = n.sub;
      const title = node("title", {}, g);
      title.textContent = "Open " + n.ref;
      g.addEventListener("click", () => { model.set("clicked", n.ref); model.save_changes(); });
    }
  }
  draw();
  for (const name of ["nodes", "edges", "current", "width", "height"]) model.on("change:" + name, draw);
}
export default { render };
