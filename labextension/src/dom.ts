// Small DOM helpers. Registry text (names, descriptions, tags, metrics, file names) comes
// from anyone's bundle, so it only ever goes into the page as textContent or attributes,
// never as HTML; the model card is the one exception and goes through rendermime's sanitizer.

export type Child = Node | string | null | undefined | false;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { class?: string; title?: string; attrs?: Record<string, string> } = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.class) {
    node.className = props.class;
  }
  if (props.title) {
    node.title = props.title;
  }
  for (const [key, value] of Object.entries(props.attrs ?? {})) {
    node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

export function button(
  label: string,
  className: string,
  onClick: () => void,
  title?: string
): HTMLButtonElement {
  const node = el('button', { class: `maas-button ${className}`, title }, label);
  node.type = 'button';
  node.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return node;
}

/** A compact two-column table of label/value pairs. */
export function keyValueTable(rows: Array<[string, Child]>, className = ''): HTMLTableElement {
  const table = el('table', { class: `maas-table maas-kv ${className}` });
  for (const [key, value] of rows) {
    table.appendChild(el('tr', {}, el('th', {}, key), el('td', {}, value)));
  }
  return table;
}

/** A table with a header row; each cell is text or a node. */
export function gridTable(headers: string[], rows: Child[][], className = ''): HTMLTableElement {
  const table = el('table', { class: `maas-table ${className}` });
  table.appendChild(el('thead', {}, el('tr', {}, ...headers.map(h => el('th', {}, h)))));
  const body = el('tbody');
  for (const row of rows) {
    body.appendChild(el('tr', {}, ...row.map(cell => el('td', {}, cell))));
  }
  table.appendChild(body);
  return table;
}

/** Any value as short text: numbers to 4 significant digits, objects as JSON. */
export function text(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  if (typeof value === 'number') {
    return Number.isFinite(value) ? String(Number(value.toPrecision(4))) : String(value);
  }
  if (typeof value === 'object') {
    return JSON.stringify(value);
  }
  return String(value);
}

/** "acc 0.97, f1 0.95": a version's key metrics on one line. */
export function metricsText(metrics: Record<string, number> | null | undefined): string {
  return Object.entries(metrics ?? {})
    .map(([k, v]) => `${k} ${text(v)}`)
    .join(', ');
}

/** Tags are a list in the versions rows and a key -> value map in a version's detail. */
export function tagsText(tags: string[] | Record<string, string> | null | undefined): string {
  if (!tags) {
    return '';
  }
  if (Array.isArray(tags)) {
    return tags.map(String).join(', ');
  }
  return Object.entries(tags)
    .map(([k, v]) => (v ? `${k}=${v}` : k))
    .join(', ');
}
