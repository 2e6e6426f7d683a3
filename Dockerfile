# ringprobe for volunteers and scheduled checks (docs/scheduled.md):
#   docker build -t ringprobe .
#   docker run --rm -v "$PWD/results:/results" ringprobe run --out /results
# Runs as the unprivileged user `ringprobe`. Only `run --localize` (and `trace`) needs a privilege:
# CAP_NET_RAW, to read ICMP on a raw socket; Docker hands a capability to root only, so such a run
# is `docker run --rm --user root --cap-add NET_RAW ...` (docs/scheduled.md, "Docker").
FROM python:3.11-slim

# pip writes no cache into the image and does not look for a newer pip.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/ringprobe/.venv/bin:$PATH \
    RINGPROBE_CONFIG_DIR=/config

# What the wheel is built from (pyproject.toml: the probe and analysis packages, the record
# schema it ships as probe/schema, the README as its description); nothing else of the checkout.
WORKDIR /opt/ringprobe
COPY pyproject.toml README.md ./
COPY probe ./probe
COPY analysis ./analysis
COPY measurements/schema ./measurements/schema

# The install steps of the README ("Install only the probe"), word for word (a test checks).
RUN python3 -m venv .venv \
    && .venv/bin/pip install . \
    && .venv/bin/ringprobe --version

# The user that measures; its results and its settings (consent) live on volumes.
RUN useradd --system --uid 10001 --create-home --home-dir /home/ringprobe ringprobe \
    && mkdir -p /results /config \
    && chown ringprobe:ringprobe /results /config
USER ringprobe
WORKDIR /results
VOLUME ["/results", "/config"]

ENTRYPOINT ["ringprobe"]
CMD ["--help"]
