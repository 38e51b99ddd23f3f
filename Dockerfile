# syntax=docker/dockerfile:1
#
# streamsrv container image.
#
#   docker build -t streamsrv .
#   docker run --rm -p 8080:8080 -v streamsrv-data:/var/lib/streamsrv streamsrv
#
# With no configuration it runs the development profile on the generated demo
# library.  Configure it with STREAMSRV_* variables (docs/modules/config.md), e.g.
# -e STREAMSRV_ENV=production -e STREAMSRV_MEDIA_DIR=/srv/music -v /srv/music:/srv/music:ro.
# docker-compose.yml and etc/kubernetes/ use this image.
#
# Not built or run in the project's own sandbox (no Docker Hub there): the
# command line, environment and health check below are exercised without Docker
# by tests/test_deploy_files.py.  See docs/integration/deploy.md.

FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
# `pip install .` as in the README.  PyAV's wheels carry FFmpeg: no ffmpeg package needed.
# Building the plugin cache now, as root, spares twistd from trying to write it at
# every start into a directory the service user cannot write.
RUN python -m venv /opt/streamsrv/venv \
 && /opt/streamsrv/venv/bin/pip install --no-cache-dir . \
 && /opt/streamsrv/venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

FROM python:3.11-slim
# tini as PID 1: forwards SIGTERM to twistd and reaps orphaned processes (decode
# workers whose parent died) that twistd, as PID 1, would leave as zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/streamsrv --no-create-home \
      --shell /usr/sbin/nologin streamsrv \
 && install -d -o streamsrv -g streamsrv -m 0750 /var/lib/streamsrv
COPY --from=build /opt/streamsrv/venv /opt/streamsrv/venv

# STREAMSRV_LISTEN rather than --listen in CMD, so that `-e STREAMSRV_LISTEN=...`
# (or a ConfigMap) can change it: a --listen option would beat the environment.
ENV PATH=/opt/streamsrv/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STREAMSRV_DATA_DIR=/var/lib/streamsrv \
    STREAMSRV_LISTEN=tcp:8080:interface=0.0.0.0

WORKDIR /var/lib/streamsrv
USER streamsrv
VOLUME ["/var/lib/streamsrv"]
EXPOSE 8080

# twistd finishes streams for STREAMSRV_SHUTDOWN_GRACE_S (10) after SIGTERM; give
# `docker stop` more time than that: docker stop -t 30 (compose: stop_grace_period).
STOPSIGNAL SIGTERM

# Liveness on /health with the Python of the image (the slim image has no curl).
# It assumes the listener above; change it with STREAMSRV_LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["tini", "--"]
# -n: foreground, logs on stdout; --pidfile=: no pid file (a stale one would block restarts).
CMD ["twistd", "-n", "--pidfile=", "streamsrv"]
