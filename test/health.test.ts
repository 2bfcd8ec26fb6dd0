// Device health: the kubelet's DRAResourceHealth stream (v1 and v1alpha1) over the real DRA
// socket with real gRPC clients, XID replay from kmsg, nvidia-smi health queries, taints on the
// published slices with their hold-down, persistence across restarts, and `diag health`.
import t, { type Test } from "tap";
import { once } from "node:events";
import { loadKubeletProtos, watchHealth, type HealthApiVersion, type HealthMessage, type HealthWatch } from "../agent/plugin/protos.js";
import { clampMessage } from "../agent/plugin/health-service.js";
import { startEnv, type Env } from "./support/kubelet-env.js";

type Msg = HealthMessage;

/** The next stream message that satisfies `pred` (the stream sends one at once, then on changes). */
async function nextMatching(w: HealthWatch, pred: (m: Msg) => boolean): Promise<Msg> {
  for await (const m of w.messages) if (pred(m)) return m;
  throw new Error("health stream ended");
}

t.test("protos: DRAResourceHealth v1 and v1alpha1 field numbers and names are upstream's", async (t) => {
  const p = loadKubeletProtos().packages;
  for (const [v, pkg] of [["v1", p.healthV1], ["v1alpha1", p.healthV1alpha1]] as const) {
    const fields = (msg: string): string[] => {
      const def = pkg[`${v}.${msg}`] as { type: { field: { name: string; number: number; label: string }[] } };
      return def.type.field.map((f) => `${f.name}=${f.number}${f.label === "LABEL_REPEATED" ? " repeated" : ""}`);
    };
    t.same(
      Object.fromEntries(["NodeWatchResourcesRequest", "DeviceIdentifier", "DeviceHealth", "NodeWatchResourcesResponse"].map((m) => [m, fields(m)])),
      {
        NodeWatchResourcesRequest: [],
        DeviceIdentifier: ["pool_name=1", "device_name=2"],
        DeviceHealth: ["device=1", "health=2", "last_updated_time=3", "health_check_timeout_seconds=4", "message=5"],
        NodeWatchResourcesResponse: ["devices=1 repeated"],
      },
      `${v} field table`,
    );
    const e = pkg[`${v}.HealthStatus`] as { type: { value: { name: string; number: number }[] } };
    t.same(e.type.value.map((x) => `${x.name}=${x.number}`), ["UNKNOWN=0", "HEALTHY=1", "UNHEALTHY=2"]);
    const svc = pkg[`${v}.DRAResourceHealth`] as Record<string, { path: string; responseStream: boolean }>;
    t.same(Object.values(svc).map((m) => [m.path, m.responseStream]), [[`/${v}.DRAResourceHealth/NodeWatchResources`, true]]);
  }
  t.equal(clampMessage("x".repeat(2000)).length, 1024, "a long message is cut to 1,024 bytes");
  t.ok(clampMessage("x".repeat(2000)).endsWith("..."));
  t.ok(Buffer.byteLength(clampMessage("é".repeat(700))) <= 1024, "cut by bytes, not characters");
  t.equal(clampMessage("short"), "short");
});

async function streamCase(t: Test, env: Env, version: HealthApiVersion): Promise<void> {
  const w = watchHealth(env.agent.draSocket, version);
  const first = await nextMatching(w, () => true);
  const names = first.devices.map((d) => d.device.device_name).sort();
  t.ok(names.includes("gpu-0") && names.includes("gpu-1-mig-19-0-1"), `${version}: the full device list, MIG devices included`);
  t.ok(first.devices.every((d) => d.device.pool_name === "node-a" && ["HEALTHY", "UNHEALTHY", "UNKNOWN"].includes(d.health)), `${version}: pool and a health state on every device`);
  t.ok(first.devices.every((d) => Number(d.health_check_timeout_seconds) > 0 && Math.abs(Number(d.last_updated_time) - Date.now() / 1000) < 60), `${version}: timeout and a current timestamp`);
  const health = env.agent.plugin.health;
  if (!health) throw new Error("health service not served");
  t.equal(health.streams(), 1, `${version}: one stream open`);
  w.cancel();
  const gone = Date.now();
  while (health.streams() > 0 && Date.now() - gone < 5000) await new Promise((r) => setImmediate(r));
  t.equal(health.streams(), 0, `${version}: a stream the kubelet cancels is cleaned up`);
  w.close();
}

t.test("health stream: v1 and v1alpha1 over the real DRA socket; advertised in supported_versions; cancelled streams cleaned up", async (t) => {
  const env = await startEnv();
  t.teardown(() => env.close());
  const info = await env.reg.getInfo({}, 1000);
  t.same(info.supported_versions, ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"]);
  await streamCase(t, env, "v1");
  await streamCase(t, env, "v1alpha1");
});

t.test("health stream: --health-api off serves and advertises neither; v1alpha1 alone advertises only it", async (t) => {
  const off = await startEnv({ deps: { health: { intervalS: 10, holdDownS: 300, apiVersions: [] } } });
  t.teardown(() => off.close());
  t.same((await off.reg.getInfo({}, 1000)).supported_versions, ["v1.DRAPlugin", "v1beta1.DRAPlugin"]);
  const w = watchHealth(off.agent.draSocket, "v1");
  const err = await once(w.messages as unknown as NodeJS.EventEmitter, "error").then(([e]) => e as { code: number });
  t.equal(err.code, 12, "UNIMPLEMENTED when not served");
  w.close();
  const alpha = await startEnv({ deps: { health: { intervalS: 10, holdDownS: 300, apiVersions: ["v1alpha1"] } } });
  t.teardown(() => alpha.close());
  t.same((await alpha.reg.getInfo({}, 1000)).supported_versions, ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth"]);
  await streamCase(t, alpha, "v1alpha1");
});
