// One backend exchange relayed into the client's ServerResponse: an undici dispatch handler
// (Dispatcher.dispatch) that writes the backend's status, headers and body chunks straight to
// `res`, pauses the backend while the client's socket pushes back, and aborts the backend request
// when the client goes away. It replaces pool.request() + stream.pipeline(), whose per-request
// AbortController, DOMException, Readable body and pipeline bookkeeping were a tenth of the
// proxy's CPU time (docs/performance.md, "Proxy").
import type * as http from "node:http";
import type { Dispatcher } from "undici";
import { downstreamHeaders } from "./http-util.js";

export type RelayOutcome =
  /** The backend's answer was relayed in full (res.end() called). */
  | { kind: "done"; status: number }
  /** The client closed its side first; the backend request was aborted. */
  | { kind: "client-gone" }
  /** cancel() was called (e.g. the request body passed its limit); the backend request was aborted. */
  | { kind: "cancelled" }
  /** The backend exchange failed; headersSent says whether the client already has a status line. */
  | { kind: "failed"; error: Error; headersSent: boolean };

export interface Relay {
  done: Promise<RelayOutcome>;
  /** Stops the exchange now (settles as "cancelled"); safe to call at any time, also before a connection. */
  cancel(): void;
}

class ResponseRelay implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private status = 0;
  private settled = false;
  private abortWhenStarted = false;
  private readonly onClose = (): void => {
    if (this.res.writableFinished || this.settled) return;
    this.stop({ kind: "client-gone" });
  };
  private readonly onDrain = (): void => this.controller?.resume();

  constructor(
    private readonly res: http.ServerResponse,
    private readonly endpoint: string,
    private readonly stallMs: number,
    private readonly resolve: (o: RelayOutcome) => void,
  ) {
    res.on("close", this.onClose);
  }

  /** Settles with `outcome` and aborts the backend request (now, or as soon as it starts). */
  stop(outcome: RelayOutcome): void {
    if (this.settled) return;
    this.settle(outcome);
    if (this.controller) this.controller.abort(new Error(outcome.kind));
    else this.abortWhenStarted = true;
  }

  private settle(outcome: RelayOutcome): void {
    if (this.settled) return;
    this.settled = true;
    this.res.off("close", this.onClose);
    this.res.off("drain", this.onDrain);
    this.resolve(outcome);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.abortWhenStarted) controller.abort(new Error("cancelled"));
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200 || this.settled) return; // 1xx informational answers are not relayed
    this.status = statusCode;
    // headers leave with the first body chunk (one packet); SSE chunks are written as they come
    this.res.writeHead(statusCode, downstreamHeaders(headers, this.endpoint));
    // A client that stops reading pauses the backend, whose body timeout then never fires: bound
    // the stall on our socket instead (no listener: Node destroys it, the close aborts upstream).
    this.res.setTimeout(this.stallMs);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.settled) return;
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once("drain", this.onDrain);
    }
  }

  onResponseEnd(): void {
    if (this.settled) return;
    this.res.end();
    this.settle({ kind: "done", status: this.status });
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    this.settle({ kind: "failed", error, headersSent: this.res.headersSent });
  }
}

/** Sends `opts` to `pool` and relays the answer into `res`; `done` settles exactly once. */
export function startRelay(pool: Dispatcher, opts: Dispatcher.DispatchOptions, res: http.ServerResponse, endpoint: string, stallMs: number): Relay {
  let handler!: ResponseRelay;
  const done = new Promise<RelayOutcome>((resolve) => {
    handler = new ResponseRelay(res, endpoint, stallMs, resolve);
  });
  pool.dispatch(opts, handler);
  return { done, cancel: () => handler.stop({ kind: "cancelled" }) };
}
