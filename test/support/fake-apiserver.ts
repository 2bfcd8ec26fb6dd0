// An in-process HTTP server that speaks the Kubernetes API paths Tessera uses, for tests:
// get / list (fieldSelector on spec.nodeName, spec.driver, metadata.name, metadata.namespace;
// labelSelector equality) / watch (chunked JSON events) / create / update (resourceVersion
// conflicts) / merge-patch / delete, for any group, version and resource. Fault injection
// and an authorizer hook let tests exercise 404/409/500/slow and least-privilege RBAC.
import * as http from "node:http";
import { randomUUID } from "node:crypto";
import { promises as fsp } from "node:fs";
import type { AddressInfo } from "node:net";

export type Verb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete";

export interface RequestRecord {
  verb: Verb;
  group: string; // "" for the core group
  version: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
}

export interface Fault {
  status?: number;
  message?: string;
  delayMs?: number;
}

type Obj = Record<string, unknown> & { metadata?: Record<string, unknown> };

interface Watcher {
  key: string;
  namespace?: string;
  res: http.ServerResponse;
  filter: (o: Obj) => boolean;
}

export interface FakeApiServer {
  url: string;
  requests: RequestRecord[];
  /** Return a fault to inject for a request, or undefined to serve it normally. */
  fault: ((r: RequestRecord) => Fault | undefined) | undefined;
  /** Return false to answer 403 Forbidden. */
  authorize: ((r: RequestRecord) => boolean) | undefined;
  /** What GET /version answers (the API server's version.Info); default 1.37.2. */
  serverVersion: { major: string; minor: string; gitVersion: string };
  seed(group: string, version: string, resource: string, obj: Obj): Obj;
  objects(group: string, resource: string): Obj[];
  get(group: string, resource: string, name: string, namespace?: string): Obj | undefined;
  /** Deletes as another client would (e.g. the kubelet removing slices); watchers see it. */
  remove(group: string, resource: string, name: string, namespace?: string): boolean;
  writeKubeconfig(file: string): Promise<void>;
  close(): Promise<void>;
}

function status(code: number, reason: string, message: string): string {
  return JSON.stringify({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code });
}

const REASONS: Record<number, string> = { 400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 422: "Invalid", 500: "InternalError", 503: "ServiceUnavailable" };

function fieldValue(o: Obj, path: string): string | undefined {
  let cur: unknown = o;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur === undefined || cur === null ? undefined : String(cur);
}

function selectorFilter(fieldSel: string | null, labelSel: string | null): (o: Obj) => boolean {
  const fields = (fieldSel ?? "").split(",").filter(Boolean).map((t) => {
    const neg = t.includes("!=");
    const [k, v] = t.split(neg ? "!=" : /==?/);
    return { k: k ?? "", v: v ?? "", neg };
  });
  const labels = (labelSel ?? "").split(",").filter(Boolean).map((t) => {
    const [k, v] = t.split(/==?/);
    return { k: k ?? "", v };
  });
  return (o) => {
    for (const f of fields) {
      const val = fieldValue(o, f.k) ?? "";
      if (f.neg ? val === f.v : val !== f.v) return false;
    }
    const l = (o.metadata?.labels ?? {}) as Record<string, string>;
    for (const s of labels) {
      if (s.v === undefined ? !(s.k in l) : l[s.k] !== s.v) return false;
    }
    return true;
  };
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = target !== null && typeof target === "object" && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export async function startFakeApiServer(): Promise<FakeApiServer> {
  // key: group/resource ; value: map "ns/name" -> object
  const store = new Map<string, Map<string, Obj>>();
  const watchers = new Set<Watcher>();
  let rv = 1000;
  const requests: RequestRecord[] = [];

  const bucket = (group: string, resource: string): Map<string, Obj> => {
    const k = `${group}/${resource}`;
    let b = store.get(k);
    if (!b) store.set(k, (b = new Map()));
    return b;
  };
  const objKey = (ns: string | undefined, name: string): string => `${ns ?? ""}/${name}`;

  function notify(group: string, resource: string, type: "ADDED" | "MODIFIED" | "DELETED", obj: Obj): void {
    for (const w of watchers) {
      if (w.key !== `${group}/${resource}`) continue;
      if (w.namespace !== undefined && obj.metadata?.namespace !== w.namespace) continue;
      if (!w.filter(obj)) continue;
      w.res.write(JSON.stringify({ type, object: obj }) + "\n");
    }
  }

  function stamp(obj: Obj, ns: string | undefined, existing?: Obj): Obj {
    const meta = { ...(obj.metadata ?? {}) };
    if (ns !== undefined) meta.namespace = ns;
    meta.uid = existing?.metadata?.uid ?? meta.uid ?? randomUUID();
    meta.creationTimestamp = existing?.metadata?.creationTimestamp ?? new Date().toISOString();
    meta.resourceVersion = String(++rv);
    const prevGen = Number(existing?.metadata?.generation ?? 0);
    meta.generation = existing ? prevGen + 1 : 1;
    return { ...obj, metadata: meta };
  }

  const api: FakeApiServer = {
    url: "",
    requests,
    fault: undefined,
    authorize: undefined,
    serverVersion: { major: "1", minor: "37", gitVersion: "v1.37.2" },
    seed(group, _version, resource, obj) {
      const ns = obj.metadata?.namespace as string | undefined;
      const stamped = stamp(obj, ns);
      bucket(group, resource).set(objKey(ns, String(stamped.metadata?.name)), stamped);
      notify(group, resource, "ADDED", stamped);
      return stamped;
    },
    objects: (group, resource) => [...bucket(group, resource).values()],
    get: (group, resource, name, ns) => bucket(group, resource).get(objKey(ns, name)),
    remove(group, resource, name, ns) {
      const b = bucket(group, resource);
      const o = b.get(objKey(ns, name));
      if (!o) return false;
      b.delete(objKey(ns, name));
      notify(group, resource, "DELETED", { ...o, metadata: { ...o.metadata, resourceVersion: String(++rv) } });
      return true;
    },
    async writeKubeconfig(file) {
      const cfg = {
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "fake", cluster: { server: api.url, "insecure-skip-tls-verify": true } }],
        users: [{ name: "fake", user: { token: "fake-token" } }],
        contexts: [{ name: "fake", context: { cluster: "fake", user: "fake" } }],
        "current-context": "fake",
      };
      await fsp.writeFile(file, JSON.stringify(cfg));
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const w of watchers) w.res.end();
        watchers.clear();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };

  async function readBody(req: http.IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    return text ? JSON.parse(text) : undefined;
  }

  const server = http.createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(status(500, "InternalError", String(err)));
    });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/version") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ...api.serverVersion, platform: "linux/amd64" }));
      return;
    }
    const parts = url.pathname.split("/").filter(Boolean);
    let group: string, version: string, rest: string[];
    if (parts[0] === "api") {
      group = "";
      version = parts[1] ?? "";
      rest = parts.slice(2);
    } else if (parts[0] === "apis") {
      group = parts[1] ?? "";
      version = parts[2] ?? "";
      rest = parts.slice(3);
    } else {
      res.writeHead(404).end(status(404, "NotFound", "unknown path"));
      return;
    }
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [resource = "", name, subresource] = rest;
    const watch = url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1";
    const method = req.method ?? "GET";
    const verb: Verb =
      method === "GET" ? (name ? "get" : watch ? "watch" : "list") : method === "POST" ? "create" : method === "PUT" ? "update" : method === "PATCH" ? "patch" : "delete";
    const record: RequestRecord = { verb, group, version, resource };
    if (subresource) record.subresource = subresource;
    if (namespace !== undefined) record.namespace = namespace;
    if (name) record.name = name;
    requests.push(record);

    if (api.authorize && !api.authorize(record)) {
      res.writeHead(403, { "content-type": "application/json" }).end(status(403, "Forbidden", `${verb} ${group}/${resource} is forbidden`));
      return;
    }
    const fault = api.fault?.(record);
    if (fault?.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
    if (fault?.status) {
      res.writeHead(fault.status, { "content-type": "application/json" }).end(status(fault.status, REASONS[fault.status] ?? "Unknown", fault.message ?? "injected fault"));
      return;
    }

    const b = bucket(group, resource);
    const json = (code: number, body: unknown): void => {
      res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
    };
    const fail = (code: number, message: string): void => {
      res.writeHead(code, { "content-type": "application/json" }).end(status(code, REASONS[code] ?? "Unknown", message));
    };
    const filter = selectorFilter(url.searchParams.get("fieldSelector"), url.searchParams.get("labelSelector"));

    switch (verb) {
      case "get": {
        const o = b.get(objKey(namespace, name ?? ""));
        return o ? json(200, o) : fail(404, `${resource} "${name}" not found`);
      }
      case "list": {
        const items = [...b.values()].filter((o) => (namespace === undefined || o.metadata?.namespace === namespace) && filter(o));
        return json(200, { kind: "List", apiVersion: version, metadata: { resourceVersion: String(rv) }, items });
      }
      case "watch": {
        res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
        const w: Watcher = { key: `${group}/${resource}`, res, filter };
        if (namespace !== undefined) w.namespace = namespace;
        watchers.add(w);
        req.on("close", () => watchers.delete(w));
        res.write(""); // flush headers so clients see the watch established
        return;
      }
      case "create": {
        const body = (await readBody(req)) as Obj;
        let objName = body.metadata?.name as string | undefined;
        if (!objName && body.metadata?.generateName) objName = `${String(body.metadata.generateName)}${randomUUID().slice(0, 5)}`;
        if (!objName) return fail(422, "metadata.name or metadata.generateName is required");
        if (b.has(objKey(namespace, objName))) return fail(409, `${resource} "${objName}" already exists`);
        const o = stamp({ ...body, metadata: { ...body.metadata, name: objName } }, namespace);
        b.set(objKey(namespace, objName), o);
        notify(group, resource, "ADDED", o);
        return json(201, o);
      }
      case "update":
      case "patch": {
        const existing = b.get(objKey(namespace, name ?? ""));
        if (!existing) return fail(404, `${resource} "${name}" not found`);
        const body = (await readBody(req)) as Obj;
        let next: Obj;
        if (verb === "update") {
          const sentRv = body.metadata?.resourceVersion;
          if (sentRv !== undefined && sentRv !== existing.metadata?.resourceVersion) {
            return fail(409, `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
          }
          next = subresource === "status" ? { ...existing, status: body.status } : subresource ? existing : { ...body, status: existing.status ?? body.status };
        } else {
          next = mergePatch(existing, body) as Obj;
        }
        const o = stamp(next, namespace, existing);
        b.set(objKey(namespace, name ?? ""), o);
        notify(group, resource, "MODIFIED", o);
        return json(200, o);
      }
      case "delete": {
        const existing = b.get(objKey(namespace, name ?? ""));
        if (!existing) return fail(404, `${resource} "${name}" not found`);
        b.delete(objKey(namespace, name ?? ""));
        notify(group, resource, "DELETED", existing);
        return json(200, existing);
      }
    }
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  api.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return api;
}
