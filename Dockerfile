# xcombus: the library and the `xcombus` CLI (its materializer: `xcombus materialize`).
# Pure-Python PyPI dependencies only (aiokafka, msgspec, aiosqlite, click, rich): no Java here.
# The Kafka broker runs in its own container (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Only what the wheel is built from (pyproject.toml packages xcombus* only), so caches,
# local *.db views and .git never end up in the image.
COPY pyproject.toml README.md ./
COPY xcombus ./xcombus
RUN pip install --no-cache-dir . \
    && xcombus --version

# Non-root user. /data is where the compose file mounts the `view` volume; an empty named
# volume takes this directory's owner, so the user can write the view and its .lock file.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/xcombus xcombus \
    && mkdir -p /data \
    && chown xcombus:xcombus /data

USER xcombus
# A relative XCOMBUS_VIEW_PATH (default "xcombus.db") lands in the writable /data.
WORKDIR /data

CMD ["xcombus", "--help"]
