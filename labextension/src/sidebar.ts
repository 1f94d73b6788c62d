// The Models sidebar: a search box, the versions table, a status line and the detail view of
// the version clicked. While it is visible it asks for the registry's revision every 2 s and
// reloads the list and the open detail only when that changed (docs/lab.md).
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Panel, Widget } from '@lumino/widgets';

import * as api from './api';
import { DetailView } from './detail';
import { el, metricsText, text } from './dom';

const POLL_MS = 2000;
const MAX_BACKOFF = 3; // doublings of the poll interval while the server keeps failing
const SEARCH_DEBOUNCE_MS = 150;

export class ModelsSidebar extends Panel {
  constructor(options: ModelsSidebar.IOptions) {
    super();
    this.id = 'maas-lab:models';
    this.addClass('maas-sidebar');
    this.title.icon = options.icon;
    this.title.caption = 'maas_lab models';

    this._search = el('input', {
      class: 'maas-search jp-mod-styled',
      attrs: { type: 'search', placeholder: 'Search models…', 'aria-label': 'Search models' }
    });
    this._search.addEventListener('input', () => this._searchSoon());
    this._status = el('div', { class: 'maas-status', attrs: { role: 'status' } }, 'Loading…');
    this._table = el('div', { class: 'maas-versions' });

    const top = new Widget({
      node: el(
        'div',
        { class: 'maas-top' },
        el('div', { class: 'maas-title' }, 'maas_lab models'),
        this._search,
        this._status,
        this._table
      )
    });
    this.detail = new DetailView({
      rendermime: options.rendermime,
      tracker: options.tracker,
      onChanged: () => void this.refresh()
    });
    this.addWidget(top);
    this.addWidget(this.detail);
  }

  readonly detail: DetailView;

  /** The version whose details are open (as clicked), or null. */
  get selectedRef(): string | null {
    return this.detail.ref;
  }

  /** Open the details of `ref` and mark its row. */
  select(ref: string | null): Promise<void> {
    this._markSelected(ref);
    return this.detail.showVersion(ref);
  }

  /** Reload the list and the open detail now (after an action, or on demand). */
  async refresh(): Promise<void> {
    await Promise.all([this._loadList(), this.detail.reload()]);
  }

  dispose(): void {
    this._stopPolling();
    window.clearTimeout(this._searchTimer);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._startPolling();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this._startPolling();
    }
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._stopPolling();
  }

  protected onBeforeDetach(msg: Message): void {
    this._stopPolling();
    super.onBeforeDetach(msg);
  }

  private _startPolling(): void {
    if (this._polling || this.isDisposed) {
      return;
    }
    this._polling = true;
    this._failures = 0;
    if (!this._inTick) {
      void this._tick(); // else the running tick schedules the next one
    }
  }

  private _stopPolling(): void {
    this._polling = false;
    window.clearTimeout(this._pollTimer);
  }

  /** One poll: compare the revision, reload on a change, refresh the servers' load. Never
   * throws: a failure is shown in the status line and the next tick tries again. */
  private async _tick(): Promise<void> {
    window.clearTimeout(this._pollTimer);
    if (!this._polling || this.isDisposed) {
      return;
    }
    this._inTick = true;
    try {
      if (!document.hidden) {
        const revision = await api.revision();
        if (revision !== this._revision) {
          this._revision = revision;
          this.node.dataset.maasRevision = revision;
          await this.refresh();
        } else if (this.detail.version) {
          // Servers change no registry revision: one started or stopped elsewhere (a
          // notebook's %maas serve) is seen here, and the load of those shown is refreshed.
          const rows = (await api.servers(true)).rows ?? [];
          if (this.detail.servedByOthers(rows)) {
            await this.detail.reload();
          } else {
            this.detail.updateServers(rows);
          }
        }
      }
      this._failures = 0;
    } catch (err) {
      this._revision = null; // reload everything once the server answers again
      this._failures += 1;
      this._showStatus(api.describeError(err), true);
    } finally {
      this._inTick = false;
    }
    if (this._polling && !this.isDisposed) {
      // While the server keeps failing (registry unreadable, extension missing), ask less
      // often: 2, 4, 8, then every 16 s; the first answer brings it back to 2 s.
      const delay = POLL_MS * 2 ** Math.min(this._failures, MAX_BACKOFF);
      this._pollTimer = window.setTimeout(() => void this._tick(), delay);
    }
  }

  private _searchSoon(): void {
    window.clearTimeout(this._searchTimer);
    this._searchTimer = window.setTimeout(() => void this._loadList(), SEARCH_DEBOUNCE_MS);
  }

  /** Read the versions for the search box's text; an answer for older text is dropped. */
  private async _loadList(): Promise<void> {
    const ticket = ++this._listTicket;
    const search = this._search.value;
    try {
      const answer = await api.versions(search);
      if (ticket !== this._listTicket || this.isDisposed) {
        return;
      }
      const rows = answer.rows ?? [];
      this._renderRows(rows, search);
      this._showStatus([answer.title, answer.note].filter(Boolean).join(', '), false);
    } catch (err) {
      if (ticket !== this._listTicket || this.isDisposed) {
        return;
      }
      this._revision = null; // the next poll tries again, changed or not
      this._showStatus(api.describeError(err), true);
    }
  }

  private _showStatus(message: string, isError: boolean): void {
    this._status.textContent = message;
    this._status.classList.toggle('maas-error', isError);
    this._status.dataset.maasError = isError ? 'true' : 'false';
  }

  private _renderRows(rows: api.IVersionRow[], search: string): void {
    this._table.textContent = '';
    if (!rows.length) {
      this._table.appendChild(
        el(
          'p',
          { class: 'maas-hint' },
          search.trim()
            ? `No version matches ${JSON.stringify(search.trim())}.`
            : 'No versions yet: %maas register … in a notebook adds one.'
        )
      );
      return;
    }
    // Two lines per version instead of a seven-column table: a sidebar is ~250 px wide, and a
    // wide table scrolled sideways hid everything but the version. Line 1: what it is called
    // (ref, aliases) and its size; line 2: task, format, key metrics and the date, muted.
    const list = el('ul', { class: 'maas-version-list', attrs: { role: 'listbox' } });
    for (const row of rows) {
      const ref = String(row.ref);
      const created = text(row.created_at);
      const metrics = metricsText(row.metrics);
      const facts = [text(row.task), text(row.format), metrics, created.slice(0, 10)];
      const li = el(
        'li',
        { class: 'maas-row', attrs: { 'data-ref': ref, tabindex: '0', role: 'option' } },
        el(
          'div',
          { class: 'maas-row-main' },
          el('span', { class: 'maas-ref' }, ref),
          ...(row.aliases ?? []).map(a => el('span', { class: 'maas-alias' }, a)),
          el('span', { class: 'maas-size' }, text(row.size))
        ),
        el(
          'div',
          { class: 'maas-row-facts', title: facts.filter(Boolean).join(' · ') },
          facts.filter(Boolean).join(' · ')
        )
      );
      // A click must not focus the row (focus scrolls the list); keyboard users still reach
      // rows with Tab and open one with Enter.
      li.addEventListener('mousedown', event => event.preventDefault());
      li.addEventListener('click', () => void this.select(ref));
      li.addEventListener('keydown', event => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          void this.select(ref);
        }
      });
      list.appendChild(li);
    }
    this._table.appendChild(list);
    this._markSelected(this.selectedRef);
  }

  private _markSelected(ref: string | null): void {
    this._table.querySelectorAll<HTMLElement>('.maas-row').forEach(tr => {
      const selected = ref !== null && tr.dataset.ref === ref;
      tr.classList.toggle('maas-selected', selected);
      tr.setAttribute('aria-selected', selected ? 'true' : 'false');
    });
  }

  private _search: HTMLInputElement;
  private _status: HTMLElement;
  private _table: HTMLElement;
  private _revision: string | null = null;
  private _polling = false;
  private _inTick = false;
  private _failures = 0;
  private _pollTimer = 0;
  private _searchTimer = 0;
  private _listTicket = 0;
}

export namespace ModelsSidebar {
  export interface IOptions {
    icon: LabIcon;
    rendermime: IRenderMimeRegistry;
    tracker: INotebookTracker | null;
  }
}
