// What a button in the detail view and a command palette entry both do: put a snippet into
// the notebook, move an alias, start or stop a server. Each returns the message to show, or
// null when the person cancelled a dialog; failures throw with a one-line message.
import { InputDialog } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import * as api from './api';

/** Insert `code` as a new code cell below the active cell of the current notebook. */
export function insertIntoNotebook(tracker: INotebookTracker | null, code: string): string {
  const panel = tracker?.currentWidget;
  const model = panel?.content.model;
  if (!panel || !model) {
    throw new Error('No notebook is open: open one, then insert again (or use Copy).');
  }
  const notebook = panel.content;
  const index = Math.min(notebook.activeCellIndex + 1, model.cells.length);
  model.sharedModel.insertCell(Math.max(index, 0), { cell_type: 'code', source: code });
  notebook.activeCellIndex = Math.max(index, 0);
  // Bring the new cell into view without taking the focus away from the sidebar.
  void notebook.scrollToItem(notebook.activeCellIndex).catch(() => undefined);
  return `Inserted into ${panel.context.path} as cell ${Math.max(index, 0) + 1}.`;
}

export interface IAliasMove {
  name: string;
  alias: string;
  version: number;
}

/** Ask which alias of `version.name` to move and to which version number (null: cancelled). */
export async function askAlias(version: {
  name: string;
  number: number;
  aliases?: string[];
}): Promise<IAliasMove | null> {
  const alias = await InputDialog.getText({
    title: `Move an alias of ${version.name}`,
    label: 'Alias (created if new)',
    text: version.aliases?.[0] ?? 'prod',
    placeholder: 'prod'
  });
  const aliasName = (alias.value ?? '').trim();
  if (!alias.button.accept || !aliasName) {
    return null;
  }
  const target = await InputDialog.getNumber({
    title: `Point ${version.name}@${aliasName} at version`,
    label: 'Version number',
    value: version.number
  });
  if (!target.button.accept || target.value === null) {
    return null;
  }
  if (!Number.isInteger(target.value) || target.value < 1) {
    throw new Error(`A version number is a whole number from 1, not ${target.value}.`);
  }
  return { name: version.name, alias: aliasName, version: target.value };
}

/** Point the alias (servers that follow it switch over before the answer comes). */
export async function moveAlias(move: IAliasMove): Promise<string> {
  const answer = await api.moveAlias(move.name, move.alias, move.version);
  return answer.message ?? `${move.name}@${move.alias} -> ${move.version}`;
}

export async function startServer(ref: string): Promise<string> {
  const answer = await api.startServer(ref);
  return answer.message ?? `Serving ${ref}${answer.url ? ` at ${answer.url}` : ''}.`;
}

export async function stopServer(name: string): Promise<string> {
  const answer = await api.stopServer(name);
  return answer.message ?? `Stopped ${name}.`;
}

/** Ask for a version when the sidebar has none selected. */
export async function askRef(title: string): Promise<string | null> {
  const answer = await InputDialog.getText({
    title,
    label: 'Version (name@N, name@alias or name)',
    placeholder: 'minilm@prod'
  });
  const ref = (answer.value ?? '').trim();
  return answer.button.accept && ref ? ref : null;
}
