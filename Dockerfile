# idempo gateway: `docker build -t idempo . && docker run -p 8080:8080 -e IDEMPO_UPSTREAM=http://api:3000 idempo`
# Debian slim rather than Alpine: better-sqlite3 (the default store) installs a prebuilt glibc binary.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
# docker stop waits 10 s before SIGKILL: the drain fits in that (raise both together, e.g. --stop-timeout 40).
ENV NODE_ENV=production \
    IDEMPO_HOST=0.0.0.0 \
    IDEMPO_PORT=8080 \
    IDEMPO_STORE=sqlite:/data/idempo.db \
    IDEMPO_DRAIN_TIMEOUT=8s
WORKDIR /app
COPY --from=build --chown=node:node /app/package.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
RUN mkdir -p /data && chown node:node /data
VOLUME /data
USER node
EXPOSE 8080
# The CLI is PID 1: it handles SIGTERM and SIGINT itself (drain, then exit 0), so no init is needed.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.IDEMPO_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/gateway/cli.js"]
CMD ["serve"]
