function render({ model, el }) {
  el.classList.add("maas-table");
  const wrap = document.createElement("div");
  wrap.className = "maas-table-scroll";
  el.appendChild(wrap);
  function draw() {
    const columns = model.get("columns");
    let rows = model.get("rows").slice();
    const sortBy = model.get("sort_by");
    const desc = model.get("descending");
    if (sortBy) {
      // Python sends each column's values as whole-number ranks: compare them as numbers.
      rows.sort((a, b) => (a.sort[sortBy] - b.sort[sortBy]) * (desc ? -1 : 1));
    }
    wrap.textContent = "";
    if (!rows.length) {
      const p = document.createElement("p");
      p.className = "maas-empty";
      p.textContent = model.get("empty");
      wrap.appendChild(p);
      return;
    }
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const c of columns) {
      const th = document.createElement("th");
      th.dataset.col = c.key;
      th.textContent = c.label + (c.key === sortBy ? (desc ? " \u25bc" : " \u25b2") : "");
      th.title = "Sort by " + c.label;
      th.onclick = () => {
        if (model.get("sort_by") === c.key) model.set("descending", !model.get("descending"));
        else { model.set("sort_by", c.key); model.set("descending", false); }
        model.save_changes();
      };
      head.appendChild(th);
    }
    const body = table.createTBody();
    const selected = model.get("selected");
    for (const r of rows) {
      const tr = body.insertRow();
      tr.className = "maas-row" + (r.key === selected ? " maas-selected" : "");
      tr.dataset.key = r.key;
      for (const c of columns) {
        const td = tr.insertCell();
        td.textContent = r.cells[c.key] ?? "";
      }
      tr.onclick = () => { model.set("selected", r.key); model.save_changes(); };
    }
    wrap.appendChild(table);
  }
  draw();
  for (const name of ["rows", "columns", "sort_by", "descending", "selected", "empty"]) {
    model.on("change:" + name, draw);
  }
}
export default { render };
