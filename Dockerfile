# optd API server. Build: docker build -t optd .   Run: docker run -p 8000:8000 optd
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    OPTD_HOST=0.0.0.0 OPTD_PORT=8000

WORKDIR /srv/optd
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --upgrade pip && pip install . \
    && useradd --system --uid 10001 --home /srv/optd optd
USER optd

EXPOSE 8000
# /readyz answers 503 while the store is unreachable.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"

ENTRYPOINT ["optd"]
CMD ["serve"]
