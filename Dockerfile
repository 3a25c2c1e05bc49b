# chatmesh: one image for every role. SERVICES chooses what a container runs (unset: everything on
# the embedded defaults; "gateway", "llm", "user,conversation,quota,moderation,tool" in a cluster).
# NODE_ENV is production, so JWT_SECRET must be set (the same on every node of a cluster).
#   docker build -t chatmesh .
#   docker run -p 3000:3000 -e JWT_SECRET="$(openssl rand -hex 32)" chatmesh   # one process, PGlite, simulator
#   docker run -e SERVICES=llm -e TRANSPORTER=nats://nats:4222 -e JWT_SECRET=… chatmesh

# Build stage: the full dependency set compiles TypeScript to plain JavaScript in dist/.
FROM node:22-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json server.ts node.ts moleculer.config.ts ./
COPY lib ./lib
COPY services ./services
COPY mixins ./mixins
COPY middlewares ./middlewares
COPY migrations ./migrations
COPY simulator ./simulator
COPY scripts ./scripts
COPY types ./types
RUN npm run build

# Runtime stage: production dependencies, the build and the web app; no TypeScript, no compiler.
FROM node:22-slim
ENV NODE_ENV=production \
    PORT=3000 \
    HEALTH_PORT=8081 \
    DATA_DIR=/app/data
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
    && mkdir -p /app/data && chown node:node /app/data
COPY --from=build /app/dist ./dist
COPY public ./public
# The code stays owned by root and read-only to the node user (uid 1000) that runs it.
USER node
# PORT: the gateway's HTTP, socket.io and /health, /ready. HEALTH_PORT: /health, /ready of any role.
EXPOSE 3000 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["node", "dist/healthcheck.js"]
STOPSIGNAL SIGTERM
CMD ["node", "--enable-source-maps", "dist/server.js"]
