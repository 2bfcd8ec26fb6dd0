# syntax=docker/dockerfile:1
# Tessera node image: `tessera agent` (kubelet DRA plugin + ResourceSlices) and `tessera proxy`.
#   docker build -t tessera:0.1.0 .
# Stages: build (all deps, TypeScript + AssemblyScript -> dist/), deps (production node_modules
# only), runtime (Node.js LTS slim + what `tessera` loads at run time, nothing else).
# Node 20 is out of support; 24 is the current LTS line (22 also works: --build-arg NODE_IMAGE=node:22-slim).
ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build before the sources are copied; we build below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json asconfig.json ./
COPY wasm-core ./wasm-core
COPY agent ./agent
COPY test ./test
COPY bench ./bench
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
# Production dependencies only: AssemblyScript, TypeScript, tap and the schema models stay behind.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json ./
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist/agent ./dist/agent
COPY --from=build /src/dist/wasm/tessera.wasm ./dist/wasm/tessera.wasm
COPY bin ./bin
COPY protos ./protos
COPY fixtures ./fixtures
# - `tessera` on PATH for the DaemonSet's command and its `tessera diag ping` probes;
# - npm, npx, corepack and yarn removed: nothing installs packages at run time;
# - nvidia-smi: the host's own, run inside the host's NVIDIA driver root (mounted read-only at
#   $NVIDIA_DRIVER_ROOT by the DaemonSet) with chroot, so it uses the host's loader, libc and NVML
#   exactly as on the host and none of them leak into Node's process (the GPU Operator checks its
#   driver the same way). chroot needs CAP_SYS_CHROOT, which the privileged agent has.
RUN chmod 0755 /app/bin/tessera.js && ln -s /app/bin/tessera.js /usr/local/bin/tessera \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-*
COPY --chmod=0755 <<"SH" /usr/local/bin/nvidia-smi
#!/bin/sh
root="${NVIDIA_DRIVER_ROOT:-/driver-root}"
if [ ! -d "$root/usr" ]; then
  echo "nvidia-smi: no driver root at $root; mount the host's NVIDIA driver root there (docs/install.md)" >&2
  exit 127
fi
exec chroot "$root" nvidia-smi "$@"
SH
# - nvidia-cuda-mps-control (--mps-control, MPS_CONTROL): the host's own as well, run the same way,
#   in a mount namespace of its own (unshare) where the claim's directories are where MPS looks.
#   The agent runs it with CUDA_MPS_PIPE_DIRECTORY, CUDA_MPS_LOG_DIRECTORY and
#   TESSERA_MPS_SHM_DIRECTORY set to <state-dir>/mps/<claim uid>/{pipe,log,shm}; inside the chroot:
#     /run/tessera-mps/pipe, /run/tessera-mps/log  the claim's pipe and log directories (a tmpfs on
#                       the driver root's /run holds the mount points: that root is mounted read-only)
#     /dev/shm          the claim's shm directory, which the CDI spec mounts as each client's /dev/shm:
#                       the MPS server and its clients share memory there
#     /proc             a procfs of the agent's PID namespace: the daemon looks itself up in
#                       /proc/self, and the driver root's /proc shows the host's PIDs (NVIDIA's DRA
#                       driver runs its daemon pods with hostPID for the same reason)
#   A daemon started with -d keeps the namespace; each client call (commands on stdin) makes its own.
#   Needs CAP_SYS_ADMIN (mounts) and CAP_SYS_CHROOT: the privileged agent has both.
COPY --chmod=0755 <<"SH" /usr/local/bin/nvidia-cuda-mps-control
#!/bin/sh
set -eu
root="${NVIDIA_DRIVER_ROOT:-/driver-root}"
if [ ! -d "$root/usr" ]; then
  echo "nvidia-cuda-mps-control: no driver root at $root; mount the host's NVIDIA driver root there (docs/install.md)" >&2
  exit 127
fi
pipe="${CUDA_MPS_PIPE_DIRECTORY:?nvidia-cuda-mps-control: CUDA_MPS_PIPE_DIRECTORY is not set (the agent sets it per claim)}"
log="${CUDA_MPS_LOG_DIRECTORY:?nvidia-cuda-mps-control: CUDA_MPS_LOG_DIRECTORY is not set (the agent sets it per claim)}"
if [ -z "${TESSERA_MPS_NAMESPACE:-}" ]; then
  TESSERA_MPS_NAMESPACE=1 exec unshare --mount --propagation private "$0" "$@"
fi
mount -t tmpfs -o mode=0755,size=64k tessera-mps "$root/run"
mkdir -p "$root/run/tessera-mps/pipe" "$root/run/tessera-mps/log"
mount --bind "$pipe" "$root/run/tessera-mps/pipe"
mount --bind "$log" "$root/run/tessera-mps/log"
if [ -n "${TESSERA_MPS_SHM_DIRECTORY:-}" ]; then mount --bind "$TESSERA_MPS_SHM_DIRECTORY" "$root/dev/shm"; fi
mount -t proc proc "$root/proc"
CUDA_MPS_PIPE_DIRECTORY=/run/tessera-mps/pipe CUDA_MPS_LOG_DIRECTORY=/run/tessera-mps/log exec chroot "$root" nvidia-cuda-mps-control "$@"
SH
# The image's default user is unprivileged; the DaemonSet runs only the agent as root.
USER node
ENTRYPOINT ["tessera"]
CMD ["demo"]
