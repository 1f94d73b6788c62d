// The detail view of one version: summary, snippets and actions, files, signature, metrics,
// servers, lineage and model card. It keeps the ref that was clicked and re-reads it when the
// sidebar says the registry changed; a version deleted meanwhile (404) is said so in place.
import { Clipboard } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import * as actions from './actions';
import * as api from './api';
import { button, Child, el, gridTable, keyValueTable, tagsText, text } from './dom';

type State = 'empty' | 'loading' | 'ready' | 'missing' | 'error';

export class DetailView extends Widget {
  constructor(options: DetailView.IOptions) {
    super();
    this.addClass('maas-detail');
    this._tracker = options.tracker;
    this._onChanged = options.onChanged;
    // Cards are untrusted Markdown: rendered with the registry's sanitizer, plus a pass that
    // turns remote images into text (no request leaves the page because a card says so).
    this._rendermime = options.rendermime.clone({
      sanitizer: new CardSanitizer(options.rendermime.sanitizer)
    });
    this._render();
  }

  /** The ref shown (as clicked or asked), or null. */
  get ref(): string | null {
    return this._ref;
  }

  /** The version's answer, when it loaded and still exists. */
  get version(): api.IVersionDetail | null {
    return this._state === 'ready' ? this._data : null;
  }

  /** Show `ref` (a row's name@N), or nothing with null. */
  showVersion(ref: string | null): Promise<void> {
    if (ref !== this._ref) {
      this._ref = ref;
      this._data = null;
      this._existed = false;
      this._shownJSON = '';
      this._message = '';
      this._state = ref ? 'loading' : 'empty';
      this._render();
    }
    return this.reload();
  }

  /** Read the shown version again; the last answer asked for wins. */
  async reload(): Promise<void> {
    const ref = this._ref;
    if (!ref) {
      return;
    }
    const ticket = ++this._ticket;
    try {
      const data = await api.version(ref);
      if (ticket !== this._ticket) {
        return;
      }
      const json = JSON.stringify(data);
      if (this._state === 'ready' && json === this._shownJSON) {
        return; // nothing changed: keep the DOM (and the rendered card) as it is
      }
      this._data = data;
      this._shownJSON = json;
      this._state = 'ready';
      this._existed = true;
    } catch (err) {
      if (ticket !== this._ticket) {
        return;
      }
      this._shownJSON = '';
      // 404: no such version. A ref that answered before and is now refused (400: "'toy' has
      // no version 3") names the same text against a registry that changed: it is gone too.
      const status = err instanceof api.ApiError ? err.status : 0;
      if (status === 404 || (this._existed && status === 400)) {
        this._state = 'missing';
        this._error = `${ref} no longer exists: it was deleted from the registry. ${api.describeError(err)}`;
      } else {
        this._state = 'error';
        this._error = `Could not read ${ref}: ${api.describeError(err)}`;
      }
    }
    this._render();
  }

  /** Whether the running servers that serve this version (by model name and version
   * number, as the server extension matches them) differ from those shown. */
  servedByOthers(rows: api.IServerRow[]): boolean {
    const data = this.version;
    if (!data) {
      return false;
    }
    const serving = rows
      .filter(
        r =>
          String(r.model ?? '').split('@')[0] === data.name &&
          String(r.version ?? '')
            .split(',')
            .includes(String(data.number))
      )
      .map(api.serverName)
      .sort();
    const shown = (data.servers ?? []).map(api.serverName).sort();
    return JSON.stringify(serving) !== JSON.stringify(shown);
  }

  /** Refresh the load figures of the servers shown, from GET /maas/api/servers (the
   * registry revision does not change when a server's load does). */
  updateServers(rows: api.IServerRow[]): void {
    const data = this.version;
    if (!data || !data.servers?.length) {
      return;
    }
    const live = new Map(rows.map(r => [api.serverName(r), r]));
    const next = data.servers
      .filter(s => live.has(api.serverName(s)))
      .map(s => ({ ...s, ...live.get(api.serverName(s)) }));
    if (JSON.stringify(next) !== JSON.stringify(data.servers)) {
      data.servers = next;
      this._shownJSON = JSON.stringify(data);
      this._render();
    }
  }

  /** Run an action with the view busy (buttons disabled), then show its message and tell
   * the sidebar to reload: the action changed the registry or its servers. */
  async run(
    pending: string,
    action: () => Promise<string | null> | string | null,
    changes = true
  ): Promise<void> {
    if (this._busy) {
      return;
    }
    this._busy = true;
    this._message = pending;
    this._messageKind = 'busy';
    this._render();
    let changed = false;
    try {
      const message = await action();
      this._message = message ?? '';
      this._messageKind = 'ok';
      changed = changes && message !== null;
    } catch (err) {
      this._message = api.describeError(err);
      this._messageKind = 'error';
    } finally {
      this._busy = false;
    }
    this._render();
    if (changed) {
      this._onChanged();
    }
  }

  dispose(): void {
    this._cardRenderer?.dispose();
    this._cardRenderer = null;
    super.dispose();
  }

  private _render(): void {
    if (this.isDisposed) {
      return;
    }
    const node = this.node;
    node.textContent = '';
    node.dataset.maasState = this._state;
    node.dataset.maasBusy = this._busy ? 'true' : 'false';
    node.classList.toggle('maas-busy', this._busy);
    if (this._ref) {
      node.dataset.ref = this._ref;
    } else {
      delete node.dataset.ref;
    }
    if (this._state === 'empty') {
      node.appendChild(
        el('p', { class: 'maas-hint' }, 'Click a version above to see its details.')
      );
      return;
    }
    const header = el(
      'div',
      { class: 'maas-detail-header' },
      el('span', { class: 'maas-detail-ref' }, this._ref ?? ''),
      button('×', 'maas-close', () => void this.showVersion(null), 'Close the details')
    );
    node.appendChild(header);
    if (this._state === 'loading') {
      node.appendChild(el('p', { class: 'maas-hint' }, 'Loading…'));
      return;
    }
    if (this._state === 'missing' || this._state === 'error') {
      node.appendChild(
        el(
          'p',
          { class: `maas-message maas-${this._state}`, attrs: { role: 'alert' } },
          this._error
        )
      );
      this._appendMessage();
      return;
    }
    const data = this._data!;
    for (const alias of data.aliases ?? []) {
      header.insertBefore(el('span', { class: 'maas-alias' }, alias), header.lastChild);
    }
    if (data.description) {
      node.appendChild(el('p', { class: 'maas-description' }, data.description));
    }
    node.appendChild(this._actions(data));
    this._appendMessage();
    node.appendChild(this._section('Snippets', this._snippets(data)));
    node.appendChild(this._section('Summary', this._summary(data)));
    node.appendChild(this._section('Servers', this._servers(data)));
    node.appendChild(this._section('Files', this._files(data)));
    node.appendChild(this._section('Signature', this._signature(data)));
    node.appendChild(this._section('Metrics', this._metrics(data)));
    node.appendChild(this._section('Lineage', this._lineage(data)));
    node.appendChild(this._section('Model card', this._card(data)));
    if (this._busy) {
      node.querySelectorAll('button').forEach(b => (b.disabled = true));
    }
  }

  private _appendMessage(): void {
    const line = el(
      'div',
      { class: `maas-action-status maas-${this._messageKind}`, attrs: { role: 'status' } },
      this._message
    );
    line.hidden = !this._message;
    this.node.appendChild(line);
  }

  /** A collapsible section that stays collapsed across re-renders when closed. */
  private _section(title: string, body: Child): HTMLElement {
    const details = el(
      'details',
      { class: 'maas-section', attrs: { 'data-section': title } },
      el('summary', {}, title),
      body
    );
    details.open = !this._collapsed.has(title);
    details.addEventListener('toggle', () => {
      if (details.open) {
        this._collapsed.delete(title);
      } else {
        this._collapsed.add(title);
      }
    });
    return details;
  }

  private _actions(data: api.IVersionDetail): HTMLElement {
    return el(
      'div',
      { class: 'maas-actions' },
      button(
        'Move alias…',
        'maas-move-alias',
        () =>
          void this.run(`Moving an alias of ${data.name}…`, async () => {
            const move = await actions.askAlias(data);
            return move ? actions.moveAlias(move) : null;
          }),
        `Point an alias of ${data.name} at a version`
      ),
      button(
        'Start server',
        'maas-start-server',
        () =>
          void this.run(`Starting a server for ${data.ref}… (until it is ready)`, () =>
            actions.startServer(data.ref)
          ),
        `Serve ${data.ref} on 127.0.0.1`
      )
    );
  }

  private _snippets(data: api.IVersionDetail): Child {
    const snippets = data.snippets ?? [];
    if (!snippets.length) {
      return el('p', { class: 'maas-hint' }, 'No snippets.');
    }
    return el(
      'div',
      { class: 'maas-snippets' },
      ...snippets.map(s =>
        el(
          'div',
          { class: 'maas-snippet', attrs: { 'data-action': String(s.action) } },
          el(
            'div',
            { class: 'maas-snippet-bar' },
            el('span', { class: 'maas-snippet-title' }, String(s.title ?? s.action)),
            button(
              'Insert',
              'maas-insert',
              () =>
                void this.run(
                  'Inserting…',
                  () => actions.insertIntoNotebook(this._tracker, String(s.code)),
                  false
                ),
              'Insert as a new cell below the active cell of the current notebook'
            ),
            button(
              'Copy',
              'maas-copy',
              () =>
                void this.run(
                  'Copying…',
                  () => {
                    Clipboard.copyToSystem(String(s.code));
                    return 'Copied to the clipboard.';
                  },
                  false
                ),
              'Copy to the clipboard'
            )
          ),
          el('pre', { class: 'maas-code' }, String(s.code))
        )
      )
    );
  }

  private _summary(data: api.IVersionDetail): Child {
    const rows: Array<[string, Child]> = [
      ['model', data.name],
      ['version', text(data.number)],
      ['task', text(data.task)],
      ['format', text(data.format)],
      ['size', text(data.size)],
      ['aliases', (data.aliases ?? []).join(', ')],
      ['tags', tagsText(data.tags)],
      ['created', `${(data.created_at ?? '').slice(0, 19)} ${data.created_by ?? ''}`.trim()]
    ];
    return keyValueTable(rows.filter(([, v]) => v));
  }

  private _servers(data: api.IVersionDetail): Child {
    const servers = data.servers ?? [];
    if (!servers.length) {
      return el('p', { class: 'maas-hint' }, 'Not served. Start server serves it on 127.0.0.1.');
    }
    // Two short lines per server rather than a wide table, so the Stop button stays in view
    // in a narrow sidebar.
    const list = el('div', { class: 'maas-servers' });
    for (const s of servers) {
      const name = api.serverName(s);
      const ms = (v: unknown) => (text(v) ? `${text(v)} ms` : '–');
      const load = `${text(s.url)} · ${text(s['req/s']) || 0} req/s · p50 ${ms(s['p50 ms'])} · p99 ${ms(s['p99 ms'])}`;
      list.appendChild(
        el(
          'div',
          {
            class: 'maas-server-row',
            title: `${text(s.model)}: ${text(s.requests)} requests, ${text(s.errors)} errors`,
            attrs: { 'data-server': name, 'data-state': text(s.state) }
          },
          el(
            'div',
            { class: 'maas-server-head' },
            el('span', { class: 'maas-server-name' }, name),
            el('span', { class: 'maas-server-state' }, `${text(s.state)} ${text(s.replicas)}`),
            button(
              'Stop',
              'maas-stop',
              () => void this.run(`Stopping ${name}… (draining)`, () => actions.stopServer(name)),
              `Drain and stop ${name}`
            )
          ),
          el('div', { class: 'maas-server-load' }, load),
          s.problem ? el('div', { class: 'maas-message maas-error' }, text(s.problem)) : null
        )
      );
    }
    return list;
  }

  private _files(data: api.IVersionDetail): Child {
    const files = data.files ?? [];
    if (!files.length) {
      return el('p', { class: 'maas-hint' }, 'No files.');
    }
    return gridTable(
      ['file', 'role', 'size', 'sha256'],
      files.map(f => [
        text(f.name),
        text(f.role),
        text(f.size),
        el('span', { class: 'maas-mono', title: text(f.sha256) }, text(f.sha256).slice(0, 12))
      ])
    );
  }

  private _signature(data: api.IVersionDetail): Child {
    const rows: Child[][] = [];
    for (const io of ['inputs', 'outputs'] as const) {
      for (const spec of data.signature?.[io] ?? []) {
        const s = (spec && typeof spec === 'object' ? spec : { name: spec }) as Record<
          string,
          unknown
        >;
        const shape = Array.isArray(s.shape) ? s.shape.map(text).join(' × ') : text(s.shape);
        rows.push([io.slice(0, -1), text(s.name), text(s.dtype), shape]);
      }
    }
    if (!rows.length) {
      return el('p', { class: 'maas-hint' }, 'No signature recorded.');
    }
    return gridTable(['', 'name', 'dtype', 'shape'], rows);
  }

  private _metrics(data: api.IVersionDetail): Child {
    const entries = Object.entries(data.metrics ?? {});
    if (!entries.length) {
      return el('p', { class: 'maas-hint' }, 'No metrics.');
    }
    return keyValueTable(entries.map(([k, v]) => [k, text(v)]));
  }

  private _lineage(data: api.IVersionDetail): Child {
    const edges = data.lineage?.edges ?? [];
    if (!edges.length) {
      return el('p', { class: 'maas-hint' }, 'Registered directly: no parent, no children.');
    }
    const list = el('ul', { class: 'maas-lineage' });
    for (const e of edges) {
      const ref = (r: string) =>
        el('span', { class: r === data.ref ? 'maas-lineage-self' : '' }, String(r));
      list.appendChild(
        el(
          'li',
          { attrs: { 'data-parent': String(e.parent), 'data-child': String(e.child) } },
          ref(e.parent),
          ' → ',
          ref(e.child),
          e.label ? `: ${e.label}` : e.operation ? `: ${e.operation}` : ''
        )
      );
    }
    if (data.lineage?.truncated) {
      list.appendChild(el('li', { class: 'maas-hint' }, '… (the nearest versions only)'));
    }
    return list;
  }

  /** The rendered card, kept across re-renders while its Markdown is the same (a busy
   * state or a server's load changing must not re-render it). */
  private _card(data: api.IVersionDetail): Child {
    const source = data.card ? String(data.card) : '';
    if (this._cardBox && source === this._cardSource) {
      return this._cardBox;
    }
    this._cardRenderer?.dispose();
    this._cardRenderer = null;
    this._cardSource = source;
    this._cardBox = null;
    if (!source) {
      return el('p', { class: 'maas-hint' }, 'No model card.');
    }
    const box = el('div', { class: 'maas-card' });
    const renderer = this._rendermime.createRenderer('text/markdown');
    this._cardRenderer = renderer;
    this._cardBox = box;
    box.appendChild(renderer.node);
    const model = new MimeModel({ data: { 'text/markdown': source }, trusted: false });
    renderer.renderModel(model).catch(err => {
      box.textContent = `The model card could not be shown: ${api.describeError(err)}`;
    });
    return box;
  }

  private _tracker: INotebookTracker | null;
  private _onChanged: () => void;
  private _rendermime: IRenderMimeRegistry;
  private _cardRenderer: IRenderMime.IRenderer | null = null;
  private _cardBox: HTMLElement | null = null;
  private _cardSource = '';
  private _ref: string | null = null;
  private _data: api.IVersionDetail | null = null;
  private _shownJSON = '';
  private _existed = false; // this ref answered once since it was opened
  private _state: State = 'empty';
  private _error = '';
  private _ticket = 0;
  private _busy = false;
  private _message = '';
  private _messageKind: 'busy' | 'ok' | 'error' = 'ok';
  private _collapsed = new Set<string>(); // sections the person closed
}

export namespace DetailView {
  export interface IOptions {
    rendermime: IRenderMimeRegistry;
    tracker: INotebookTracker | null;
    /** Called after an action changed something: reload the list and this view. */
    onChanged: () => void;
  }
}

const CARD_DROPPED =
  'button, form, input, textarea, select, option, label, video, audio, source, track, ' +
  'iframe, frame, object, embed, picture, style, link, meta, base, svg, math, dialog';
const CARD_DROPPED_ATTRS = new Set([
  'style',
  'srcset',
  'poster',
  'background',
  'action',
  'formaction',
  'ping',
  'id',
  'name'
]);

/** The registry's sanitizer, then: images only from data: URLs (others become their alt
 * text), no controls, media, styles or data-* attributes, links open in a new tab without
 * access to this page. */
class CardSanitizer implements IRenderMime.ISanitizer {
  constructor(private _base: IRenderMime.ISanitizer) {}

  get allowNamedProperties(): boolean | undefined {
    return this._base.allowNamedProperties;
  }

  getAutolink(): boolean {
    return this._base.getAutolink?.() ?? true;
  }

  sanitize(dirty: string, options?: IRenderMime.ISanitizerOptions): string {
    const clean = this._base.sanitize(dirty, options);
    // DOMParser documents are inert: nothing in them loads while we rewrite them.
    const doc = new DOMParser().parseFromString(clean, 'text/html');
    doc.querySelectorAll('img').forEach(img => {
      const src = img.getAttribute('src') ?? '';
      if (!/^data:image\//i.test(src)) {
        const alt = img.getAttribute('alt') || 'image';
        img.replaceWith(doc.createTextNode(`[${alt}: ${src}]`));
      }
    });
    // What a card must never carry, though JupyterLab's sanitizer keeps it for notebooks:
    // buttons with data-commandlinker-* run any Lab command on a click (the app listens on
    // the whole page), forms and inputs can pose as Lab's own dialogs, and media, styles and
    // srcset fetch remote URLs (telling a card's author who opened it, and when).
    doc.querySelectorAll(CARD_DROPPED).forEach(node => {
      const src = node.getAttribute('src') || node.getAttribute('poster') || '';
      const label = (node.textContent ?? '').trim();
      const tag = node.tagName.toLowerCase();
      node.replaceWith(doc.createTextNode(src ? `[${tag}: ${src}]` : label));
    });
    doc.body.querySelectorAll('*').forEach(node => {
      for (const attr of Array.from(node.attributes)) {
        const name = attr.name.toLowerCase();
        if (CARD_DROPPED_ATTRS.has(name) || name.startsWith('data-') || name.startsWith('on')) {
          node.removeAttribute(attr.name);
        }
      }
    });
    doc.querySelectorAll('a').forEach(a => a.setAttribute('rel', 'noopener noreferrer'));
    return doc.body.innerHTML;
  }
}
