// The footprint bench's baseline: a bare Node process that loads only @grpc/grpc-js and answers one
// unary method on a unix socket (argv[2]). Messages are raw bytes (no proto-loader, no schema):
// what any gRPC server in Node costs before it does anything. Exits on SIGTERM.
import * as grpc from "@grpc/grpc-js";

const socket = process.argv[2];
if (!socket) {
  process.stderr.write("usage: _bare-grpc.js <socket path>\n");
  process.exit(2);
}
const bytes = { serialize: (b: Buffer): Buffer => b, deserialize: (b: Buffer): Buffer => b };
const service: grpc.ServiceDefinition = {
  Echo: { path: "/bare.Bare/Echo", requestStream: false, responseStream: false, requestSerialize: bytes.serialize, requestDeserialize: bytes.deserialize, responseSerialize: bytes.serialize, responseDeserialize: bytes.deserialize },
};
const server = new grpc.Server();
server.addService(service, { Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) });
server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    process.stderr.write(`bare-grpc: ${err.message}\n`);
    process.exit(1);
  }
});
process.once("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
