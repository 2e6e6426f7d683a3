"""`ringprobe run --locate` in the lab keeps the network, not the address.

A whole lab run from the client namespace (Lab.run_probe: the lab catalog, an allow-list of the
lab's ranges alone) with ``--locate`` against the lab's neutral STUN server (coturn, the
``neutral-stun`` endpoint), over IPv4 and over IPv6: coturn reflects the client's address, the
lab resolver answers Team Cymru's origin TXT query for it (probe.lab.servers.lab_origin_txt:
AS64500, XL), and then no byte of the records, the manifest, stdout or stderr holds either of the
client's addresses in any form the scrubber knows (compressed, exploded, upper case,
IPv4-mapped), nor as packed bytes or their hex, while every record carries the looked-up ASN and
country. The records are then uploaded (`ringprobe upload`) to a collector on this machine's
loopback, and no byte of the collector's store (raw partitions, index) holds them either.

Today no check writes the address at all (a run with the scrubber disabled passes the byte test
too), so two things make the test able to fail where it matters: the output directory is named
after the address being looked up, so the JSON summary on stdout names it and must come through
the scrubber; and the lab resolver's query log must show the TXT query for the client's address,
so the address the probe held (and had to keep out of the files) really was the client's. Needs
root (see conftest.py).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Final

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.lab import Lab, plan
from probe.lab.plan import STUN_PORT
from probe.lab.servers import LAB_ASN, LAB_CC, Layout
from probe.locate import cymru_name
from probe.scrub import SCRUBBED
from tests.collectorproc import running_collector

pytestmark = pytest.mark.lab

TIMEOUT: Final = 3.0
# The signaling checks take under 20 s in the lab (probe.lab.scenario.RUN_DEADLINE).
DEADLINE: Final = 120.0
_SLACK: Final = 60.0


def _forms(address: str) -> set[bytes]:
    """Every way the address could be written into a file: text forms, packed, hex."""
    ip = ipaddress.ip_address(address)
    texts = {str(ip), ip.exploded}
    if isinstance(ip, ipaddress.IPv4Address):
        mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
        texts |= {f"::ffff:{ip}", str(mapped), mapped.exploded}
    texts |= {text.upper() for text in texts}
    found = {text.encode() for text in texts}
    return found | {ip.packed, ip.packed.hex().encode(), ip.packed.hex().upper().encode()}


def records_name(out: Path) -> str:
    (records,) = out.glob("*.jsonl")
    return records.name


@pytest.mark.parametrize("version", [4, 6])
def test_locate_run_keeps_no_address(lab: Lab, tmp_path: Path, version: int) -> None:
    stun = lab.plan.endpoint("neutral-stun")
    server = stun.v4 if version == 4 else f"[{stun.v6}]"
    client = plan.client_address(version)
    out = tmp_path / f"out-{client}"
    done = lab.run_probe(
        out,
        ["--timeout", f"{TIMEOUT:g}", "--deadline", f"{DEADLINE:g}", "--json",
         "--locate", "--stun-server", f"{server}:{STUN_PORT}"],
        timeout=DEADLINE + _SLACK,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["settings"]["location"] == "looked up", done.stderr
    assert summary["records_path"] == str(tmp_path / f"out-{SCRUBBED}" / records_name(out))
    log = Layout(lab.state_dir).log("resolver").read_text(errors="replace")
    assert f"query[TXT] {cymru_name(client)}" in log

    records = out / records_name(out)
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(rows) > 10  # a whole run, not an early failure
    assert {(row["probe"]["asn"], row["probe"]["cc"]) for row in rows} == {(f"AS{LAB_ASN}", LAB_CC)}

    outputs = {path.name: path.read_bytes() for path in out.iterdir()}
    assert set(outputs) == {records.name, Path(summary["manifest_path"]).name}
    assert outputs[records.name].count(b"\n") == summary["records"]
    outputs["stdout"] = done.stdout.encode()
    outputs["stderr"] = done.stderr.encode()
    # The upload: the records go to a collector on this machine's loopback (outside the lab),
    # which stores each batch's bytes as they came; its whole store is searched too, and the
    # uploader's progress file beside the records. (What `ringprobe upload` prints is not: it
    # names the records file, whose folder this test named after the address.)
    store = tmp_path / "collector"
    with running_collector(store) as url:
        uploaded = CliRunner().invoke(cli, ["upload", str(records), "--to", url])
    assert uploaded.exit_code == 0, uploaded.output
    assert f"{summary['records']} records sent ({summary['records']} stored" in uploaded.output
    stored = [path for path in store.rglob("*") if path.is_file()]
    assert any(path.suffix == ".jsonl" for path in stored)
    outputs |= {f"collector:{path.relative_to(store)}": path.read_bytes() for path in stored}
    before = {records.name, Path(summary["manifest_path"]).name}
    (progress,) = [path for path in out.iterdir() if path.name not in before]
    outputs["upload progress"] = progress.read_bytes()
    for address in (plan.client_address(4), plan.client_address(6)):
        for form in _forms(address):
            leaks = [name for name, data in outputs.items() if form in data]
            assert not leaks, f"{form!r} of the client's {address} in {leaks}"


def test_locate_with_asn_given_looks_up_the_country(lab: Lab, tmp_path: Path) -> None:
    stun = lab.plan.endpoint("neutral-stun")
    done = lab.run_probe(
        tmp_path / "out",
        ["--timeout", f"{TIMEOUT:g}", "--deadline", f"{DEADLINE:g}", "--json", "--apps", "control",
         "--locate", "--stun-server", f"{stun.v4}:{STUN_PORT}", "--asn", "AS64511"],
        timeout=DEADLINE + _SLACK,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["settings"]["location"] == "looked up, asn given"
    rows = [json.loads(line) for line in Path(summary["records_path"]).read_text().splitlines()]
    assert rows
    assert {(row["probe"]["asn"], row["probe"]["cc"]) for row in rows} == {("AS64511", LAB_CC)}
