# syntax=docker/dockerfile:1
#
# lemonade-gateway container image.
#   docker build -t lemonade-gateway .
#   docker run -d --name lemonade \
#     -v /srv/lemonade/etc:/etc/lemonade-gateway:ro -v lemonade-data:/data \
#     -p 143:1143 -p 993:1993 -p 587:1587 -p 465:1465 -p 127.0.0.1:9464:9464 \
#     lemonade-gateway
# The mounted config.yaml should set `dataDir: /data`, listen on host 0.0.0.0 (loopback
# inside the container is unreachable from outside), and keep the metrics endpoint on
# port 9464 for the HEALTHCHECK. config.example.yaml in /app lists every option.
# `docker kill -s HUP lemonade` reloads the TLS certificate and the reloadable options
# (README, "Signals"). `docker stop` sends SIGTERM and waits 10 s by default: give it more
# than shutdown.graceSeconds (`docker run --stop-timeout 35`, compose `stop_grace_period`)
# so sessions drain before SIGKILL. deploy/compose.yaml runs a whole local trial.

ARG NODE_IMAGE=node:20-bookworm-slim

# Compilers for native addons (better-sqlite3 builds from source when no prebuilt binary
# matches); only the build stages carry them.
FROM ${NODE_IMAGE} AS toolchain
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

FROM toolchain AS build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# Production dependencies are installed where the compilers are and copied into the
# runtime image, so a native addon works there without a toolchain. This stage depends
# only on the lockfile, so a source change does not reinstall them.
FROM toolchain AS deps
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
# The flags and the malloc setting main.js asks for in its shebang, which `node dist/main.js`
# would bypass: a small young generation keeps memory following the traffic in flight, a
# floor under the old generation's limit stops read buffers setting off a mark-compact every
# few hundred ms, and a larger trim threshold stops the heap faulting its read buffers in
# again (src/main.ts).
ENV NODE_ENV=production \
    NODE_OPTIONS="--max-semi-space-size=1 --initial-old-space-size=64" \
    GLIBC_TUNABLES=glibc.malloc.trim_threshold=33554432
WORKDIR /app
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# package.json is needed at run time: it makes dist/ ESM ("type": "module") and carries the version.
COPY package.json config.example.yaml ./
# Code stays root-owned and read-only to the service; only /data is its to write.
RUN mkdir -p /data /etc/lemonade-gateway && chown node:node /data && chmod 0700 /data
USER node
VOLUME ["/data", "/etc/lemonade-gateway"]
# IMAP STARTTLS, IMAP implicit TLS, submission STARTTLS, submission implicit TLS, metrics.
EXPOSE 1143 1993 1587 1465 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:9464/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/main.js"]
CMD ["--config", "/etc/lemonade-gateway/config.yaml"]
