// The two unix-socket gRPC servers: the DRA socket first (so the endpoint GetInfo advertises
// already answers), then the registration socket the kubelet's plugin watcher discovers.
// Directories 0750, sockets 0660. Each server binds a hidden temporary name in the same
// directory (the plugin watcher ignores dot files) and renames it into place: the rename replaces
// a stale socket atomically, and closing the server later unlinks only that temporary name
// (libuv unlinks the bound path on close). On stop the public name is removed only while it is
// still our inode, so an exiting agent never deletes a socket another agent now serves.
// A socket that still answers is another live server: refused, never replaced.
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { identityOf, sameFile } from "../common/atomic-file.js";
import { assertSocketPath } from "../common/config.js";
import { TesseraError } from "../common/errors.js";

export interface ServiceBinding {
  definition: grpc.ServiceDefinition;
  impl: grpc.UntypedServiceImplementation;
}

export interface SocketServer {
  socket: string;
  /** Stops accepting, waits for in-flight calls up to deadlineMs, then cancels the rest. */
  stop(deadlineMs: number): Promise<void>;
}

/** true when something accepts connections on `socket` (a live server, not a leftover file). */
export function socketAnswers(socket: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socket);
    const done = (v: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(true), timeoutMs); // connect pending: someone is there but slow
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

async function prepareSocketPath(socket: string): Promise<void> {
  assertSocketPath(socket);
  const dir = path.dirname(socket);
  const existed = await fsp.stat(dir).then(() => true, () => false);
  if (!existed) await fsp.mkdir(dir, { recursive: true, mode: 0o750 });
  const st = await fsp.lstat(socket).catch(() => undefined);
  if (st && !st.isSocket()) throw new TesseraError("TESSERA_SOCKET", `${socket} exists and is not a socket; remove it or choose another --kubelet-root`);
  if (st && (await socketAnswers(socket))) {
    throw new TesseraError("TESSERA_SOCKET", `${socket} is served by another live process (another tessera agent on this --kubelet-root?); stop it first, or use --rolling-update-uid for per-pod socket names`);
  }
}

export interface SocketServerOptions {
  /** Largest message received or sent; larger requests get RESOURCE_EXHAUSTED before they are decoded. */
  maxMessageBytes: number;
}

export async function startSocketServer(socket: string, services: readonly ServiceBinding[], opts: SocketServerOptions): Promise<SocketServer> {
  await prepareSocketPath(socket);
  const tmp = path.join(path.dirname(socket), `.${path.basename(socket)}.${process.pid}-${randomBytes(3).toString("hex")}`);
  assertSocketPath(tmp);
  const server = new grpc.Server({ "grpc.max_receive_message_length": opts.maxMessageBytes, "grpc.max_send_message_length": opts.maxMessageBytes });
  for (const s of services) server.addService(s.definition, s.impl);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${tmp}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(new TesseraError("TESSERA_SOCKET", `cannot listen on ${socket}: ${err.message}`, { cause: err })) : resolve(),
    ),
  );
  await fsp.chmod(tmp, 0o660);
  await fsp.rename(tmp, socket); // replaces a stale socket file left by a killed run
  const own = await identityOf(socket);
  return {
    socket,
    async stop(deadlineMs) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, deadlineMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (sameFile(await identityOf(socket), own)) await fsp.rm(socket, { force: true });
    },
  };
}
