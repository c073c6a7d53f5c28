# Ferry: Deno 2.9.6 (from npm) on Debian 12 with OpenSSL 3 for the TLS engine.
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && npm install -g deno@2.9.6 \
 && useradd --system --home-dir /srv/ferry --create-home ferry \
 && mkdir -p /srv/ferry/app/var/spool \
 && chown -R ferry:ferry /srv/ferry
WORKDIR /srv/ferry/app
COPY --chown=ferry:ferry . .
USER ferry
ENV DENO_DIR=/srv/ferry/.deno
# The shipped config.ts listens on this address (port FERRY_LISTEN_PORT, default 2525, the EXPOSEd one).
ENV FERRY_LISTEN_ADDRESS=0.0.0.0
# Download every dependency at build time so the container starts without the network.
RUN deno cache mod.ts config.ts src/spool/_spool_worker.ts
# The mount point exists and belongs to ferry before VOLUME, so the volume is writable by the relay.
VOLUME ["/srv/ferry/app/var/spool"]
EXPOSE 2525
STOPSIGNAL SIGTERM
CMD ["deno", "run", "--allow-net", "--allow-read", "--allow-write", "--allow-env", "--allow-sys", "--allow-ffi", "--allow-run", "mod.ts", "--config", "config.ts"]
