# Tessera portal (ASGI) image. Workers use the same image with a different command:
#   docker run … tessera celery -A portal worker
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TESSERA_VAR_DIR=/var/lib/tessera

# Build dependencies of pinned wheels (pyscard needs swig + libpcsclite), removed after install.
COPY requirements.txt /app/requirements.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc swig libpcsclite-dev libpcsclite1 \
 && pip install --no-cache-dir -r /app/requirements.txt \
 && apt-get purge -y gcc swig libpcsclite-dev && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
RUN useradd --system --home /var/lib/tessera --create-home tessera \
 && DEBUG=1 python manage.py collectstatic --no-input -v0 \
 && chown -R tessera /var/lib/tessera
USER tessera

EXPOSE 8000
# Production needs at least DATABASE_URL, REDIS_URL and SECRET_KEY; the process refuses to start
# with the development secret key when DEBUG is off.
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "portal.asgi:application"]
