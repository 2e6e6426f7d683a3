# ringprobe in a container: `docker run --rm -v "$PWD/results:/results" ringprobe run`
# (the hardening, consent and capability notes of the volunteer image come with a later issue)
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY probe ./probe
COPY analysis ./analysis
COPY measurements/schema ./measurements/schema
RUN pip install --no-cache-dir . && useradd --create-home ringprobe && mkdir /results && chown ringprobe /results
USER ringprobe
WORKDIR /results
VOLUME ["/results"]
ENTRYPOINT ["ringprobe"]
CMD ["--help"]
