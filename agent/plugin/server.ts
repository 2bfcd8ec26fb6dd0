// The two unix-socket gRPC servers: the DRA socket first (so the endpoint GetInfo advertises
// already answers), then the registration socket the kubelet's plugin watcher discovers.
// Stale socket files are removed before binding; directories 0750, sockets 0660.
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
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

async function prepareSocketPath(socket: string): Promise<void> {
  assertSocketPath(socket);
  const dir = path.dirname(socket);
  const existed = await fsp.stat(dir).then(() => true, () => false);
  if (!existed) await fsp.mkdir(dir, { recursive: true, mode: 0o750 });
  const st = await fsp.lstat(socket).catch(() => undefined);
  if (st?.isSocket()) await fsp.rm(socket); // left by a previous run that was killed
  else if (st) throw new TesseraError("TESSERA_SOCKET", `${socket} exists and is not a socket; remove it or choose another --kubelet-root`);
}

export interface SocketServerOptions {
  /** Largest message received or sent; larger requests get RESOURCE_EXHAUSTED before they are decoded. */
  maxMessageBytes: number;
}

export async function startSocketServer(socket: string, services: readonly ServiceBinding[], opts: SocketServerOptions): Promise<SocketServer> {
  await prepareSocketPath(socket);
  const server = new grpc.Server({ "grpc.max_receive_message_length": opts.maxMessageBytes, "grpc.max_send_message_length": opts.maxMessageBytes });
  for (const s of services) server.addService(s.definition, s.impl);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(new TesseraError("TESSERA_SOCKET", `cannot listen on ${socket}: ${err.message}`, { cause: err })) : resolve(),
    ),
  );
  await fsp.chmod(socket, 0o660);
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
      await fsp.rm(socket, { force: true });
    },
  };
}
