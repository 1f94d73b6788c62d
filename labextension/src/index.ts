// The maas-lab JupyterLab plugin: the Models sidebar, the "maas: ..." commands in the palette
// and the "maas_lab notebook" launcher card. The REST side is maas_lab.lab (docs/lab.md).
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon } from '@jupyterlab/ui-components';

import * as actions from './actions';
import * as api from './api';
import { ModelsSidebar } from './sidebar';

import '../style/index.css';

const CATEGORY = 'maas';
const LOAD_EXT = '%load_ext maas_lab';

// Three stacked layers: a registry of versions. jp-icon3 follows the theme's icon colour.
const modelsIcon = new LabIcon({
  name: 'maas-lab:models',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M12 2 2 7l10 5 10-5z"/>' +
    '<path d="m4.2 10.9L2 12l10 5 10-5-2.2-1.1L12 14.8z"/>' +
    '<path d="m4.2 15.9L2 17l10 5 10-5-2.2-1.1L12 19.8z"/>' +
    '</g></svg>'
});

/** The snippet commands: id suffix, the snippet's action, the verb of the label. */
const SNIPPETS: Array<[string, string, string]> = [
  ['insert-load', 'load', 'loads'],
  ['insert-export', 'export', 'exports'],
  ['insert-compress', 'compress', 'compresses'],
  ['insert-serve', 'serve', 'serves']
];

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'maas-lab:plugin',
  description: 'The maas_lab Models sidebar, commands and launcher card.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [ICommandPalette, ILauncher, INotebookTracker, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    tracker: INotebookTracker | null,
    restorer: ILayoutRestorer | null
  ) => {
    const sidebar = new ModelsSidebar({ icon: modelsIcon, rendermime, tracker });
    app.shell.add(sidebar, 'left', { rank: 600 });
    restorer?.add(sidebar, sidebar.id);

    /** The version to act on: the command's `ref` argument, the one open in the sidebar
     * (if it still exists), else the one typed in a dialog (null: cancelled). */
    const refFor = async (args: any, title: string): Promise<string | null> =>
      typeof args?.ref === 'string' && args.ref
        ? args.ref
        : (sidebar.detail.version?.ref ?? (await actions.askRef(title)));

    // A command must never reject (the palette would log it to the console): failures and
    // results are notifications; a slow action shows as in progress until it answers.
    const guarded =
      (fn: (args: any) => Promise<void>) =>
      async (args: any): Promise<void> => {
        try {
          await fn(args);
        } catch (err) {
          Notification.error(api.describeError(err), { autoClose: 8000 });
        }
      };
    const notify = async (pending: string, work: Promise<string>): Promise<void> => {
      const id = Notification.emit(pending, 'in-progress', { autoClose: false });
      try {
        const message = await work;
        Notification.update({ id, message, type: 'success', autoClose: 5000 });
      } catch (err) {
        Notification.update({
          id,
          message: api.describeError(err),
          type: 'error',
          autoClose: 8000
        });
      }
      void sidebar.refresh().catch(() => undefined);
    };

    const add = (id: string, label: string, fn: (args: any) => Promise<void>, extra = {}) => {
      app.commands.addCommand(id, { label, caption: label, execute: guarded(fn), ...extra });
      palette?.addItem({ command: id, category: CATEGORY });
    };

    add('maas-lab:open', 'maas: Open models sidebar', async () => {
      app.shell.activateById(sidebar.id);
    });

    for (const [suffix, action, verb] of SNIPPETS) {
      add(
        `maas-lab:${suffix}`,
        `maas: Insert the line that ${verb} the selected version`,
        async args => {
          const ref = await refFor(args, `Insert the line that ${verb} which version?`);
          if (!ref) {
            return;
          }
          const version = await api.version(ref);
          const snippet =
            (version.snippets ?? []).find(s => s.action === action) ??
            (version.snippets ?? []).find(s => String(s.action).startsWith(action));
          if (!snippet) {
            throw new Error(`No "${action}" line for ${version.ref}.`);
          }
          Notification.success(actions.insertIntoNotebook(tracker, String(snippet.code)), {
            autoClose: 4000
          });
        }
      );
    }

    add('maas-lab:move-alias', 'maas: Move an alias of the selected version…', async args => {
      const ref = await refFor(args, 'Move an alias of which model?');
      if (!ref) {
        return;
      }
      const move = await actions.askAlias(await api.version(ref));
      if (move) {
        await notify(
          `Pointing ${move.name}@${move.alias} at version ${move.version}…`,
          actions.moveAlias(move)
        );
      }
    });

    add('maas-lab:start-server', 'maas: Start a server for the selected version', async args => {
      const ref = await refFor(args, 'Serve which version?');
      if (ref) {
        await notify(`Starting a server for ${ref}…`, actions.startServer(ref));
      }
    });

    add('maas-lab:stop-server', 'maas: Stop a server…', async args => {
      let name = typeof args?.name === 'string' ? args.name : '';
      if (!name) {
        const running = ((await api.servers()).rows ?? []).map(api.serverName).filter(Boolean);
        if (!running.length) {
          Notification.info('No maas_lab server is running.', { autoClose: 4000 });
          return;
        }
        const choice = await InputDialog.getItem({
          title: 'Stop which server?',
          items: running,
          current: 0
        });
        if (!choice.button.accept || !choice.value) {
          return;
        }
        name = choice.value;
      }
      await notify(`Stopping ${name}… (draining)`, actions.stopServer(name));
    });

    add(
      'maas-lab:new-notebook',
      'maas: New notebook with maas_lab',
      async () => {
        // Name the default kernel, else Lab asks which kernel to use before the first line.
        const specs = app.serviceManager.kernelspecs;
        await specs.ready;
        const kernelName = specs.specs?.default || undefined;
        const panel: NotebookPanel = await app.commands.execute('notebook:create-new', {
          kernelName
        });
        await panel.context.ready;
        const model = panel.content.model;
        if (!model) {
          return;
        }
        // A new notebook starts with one empty code cell: make it the %load_ext line.
        const first = model.cells.length ? model.cells.get(0) : null;
        if (first && first.type === 'code' && !first.sharedModel.getSource()) {
          first.sharedModel.setSource(LOAD_EXT);
        } else {
          model.sharedModel.insertCell(0, { cell_type: 'code', source: LOAD_EXT });
        }
      },
      {
        label: (args: any) =>
          args?.isLauncher ? 'maas_lab notebook' : 'maas: New notebook with maas_lab',
        icon: (args: any) => (args?.isPalette ? undefined : modelsIcon)
      }
    );
    // Its own category: in "Notebook" the launcher draws kernel cards (a letter, no icon).
    launcher?.add({
      command: 'maas-lab:new-notebook',
      category: 'maas_lab',
      rank: 0,
      args: { isLauncher: true }
    });
  }
};

export default plugin;
