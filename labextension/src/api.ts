// The REST routes of the maas_lab server extension (docs/lab.md), typed loosely: the answers
// come from the registry, which holds whatever anyone's bundle put there, so every field is
// treated as possibly missing and rendered as text.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IVersionRow {
  ref: string;
  name: string;
  number: number;
  aliases?: string[];
  tags?: string[] | Record<string, string>;
  task?: string | null;
  format?: string | null;
  size_bytes?: number | null;
  size?: string | null;
  metrics?: Record<string, number> | null;
  created_at?: string | null;
}

export interface IVersions {
  title?: string;
  note?: string;
  rows: IVersionRow[];
}

export interface IFile {
  name: string;
  role?: string;
  size?: string | number | null;
  sha256?: string | null;
}

export interface ISnippet {
  action: string;
  title: string;
  code: string;
}

export interface IEdge {
  parent: string;
  child: string;
  label?: string;
  operation?: string;
}

/** A running server, as GET /maas/api/servers and a version's "servers" list give it. */
export interface IServerRow {
  server?: string;
  name?: string;
  url?: string;
  model?: string;
  version?: string | number;
  state?: string;
  replicas?: number | string;
  queue?: number | string;
  'req/s'?: number | string | null;
  'p50 ms'?: number | string | null;
  'p99 ms'?: number | string | null;
  [key: string]: unknown;
}

export interface IVersionDetail {
  ref: string;
  name: string;
  number: number;
  task?: string | null;
  format?: string | null;
  size?: string | null;
  description?: string | null;
  aliases?: string[];
  tags?: string[] | Record<string, string>;
  created_at?: string | null;
  created_by?: string | null;
  files?: IFile[];
  signature?: { inputs?: unknown[]; outputs?: unknown[] } | null;
  metrics?: Record<string, number> | null;
  card?: string | null;
  lineage?: { nodes?: unknown[]; edges?: IEdge[]; truncated?: boolean } | null;
  servers?: IServerRow[];
  snippets?: ISnippet[];
}

export interface IActionAnswer {
  message?: string;
  line?: string;
  server?: string;
  url?: string;
}

/** A failed call: the server's one-line `{"error"}` message (or what went wrong on the way)
 * and the HTTP status (0 when the Jupyter server could not be reached). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

/** Every call goes through ServerConnection.makeRequest: it adds Jupyter's token/cookie
 * and the XSRF header that the routes which change something require. */
async function request<T>(
  path: string,
  query: Record<string, string> = {},
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'maas/api', path) + URLExt.objectToQueryString(query);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (err) {
    throw new ApiError(`Cannot reach the Jupyter server (${String(err)})`, 0);
  }
  let body: any = null;
  try {
    const text = await response.text();
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message =
      body && typeof body.error === 'string'
        ? body.error
        : response.status === 404 && !body
          ? 'The maas_lab server extension is not enabled (jupyter server extension list)'
          : `${response.status} ${response.statusText}`;
    throw new ApiError(message, response.status);
  }
  if (body === null || typeof body !== 'object') {
    throw new ApiError(`Unexpected answer from ${path}`, response.status);
  }
  return body as T;
}

function post<T>(path: string, data: unknown, query: Record<string, string> = {}) {
  return request<T>(path, query, { method: 'POST', body: JSON.stringify(data) });
}

export async function revision(): Promise<string> {
  const answer = await request<{ revision: string }>('revision');
  return String(answer.revision);
}

export function versions(search: string): Promise<IVersions> {
  return request<IVersions>('versions', search.trim() ? { search } : {});
}

export function version(ref: string): Promise<IVersionDetail> {
  return request<IVersionDetail>('version', { ref });
}

/** The running servers. `polled`: asked by a timer, not a person, so Jupyter's idle culler
 * must not count it as activity. */
export function servers(polled = false): Promise<{ rows: IServerRow[]; note?: string }> {
  return request('servers', polled ? { no_track_activity: '1' } : {});
}

export function moveAlias(name: string, alias: string, version: number) {
  return post<IActionAnswer>('alias', { name, alias, version });
}

export function startServer(ref: string) {
  return post<IActionAnswer>('servers', { ref });
}

export function stopServer(name: string) {
  return request<IActionAnswer>('servers', { name }, { method: 'DELETE' });
}

/** A server row's name, whichever key the answer used. */
export function serverName(row: IServerRow): string {
  return String(row.server ?? row.name ?? '');
}

/** The message to show for any failure, never a stack trace. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) {
    return err.message;
  }
  return err instanceof Error ? err.message : String(err);
}
