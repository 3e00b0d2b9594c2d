"""Payload encoding benchmark: size and cost of telemetry batches in several encodings.

The workload is the edge decoder's output for simulated drives
(:func:`benchmarks.ingest_write.decoded_records`), cut into one batch per vehicle and
second, which is what the edge sends with its 1 s batch age. Every codec turns the
same payload documents (the dicts :func:`encode_telemetry` serialises) into bytes
and back:

* **JSON**, the baseline: compact separators, as :func:`encode_telemetry` writes it;
* **JSON + zlib 6**, what the edge ships (``compression = "zlib"``);
* **JSON + zlib 1**, the fastest deflate level;
* **msgpack** and **msgpack + zlib 6**.

Reported per codec: bytes per sample, encode and decode microseconds per sample (the
fastest of ``repeat`` interleaved runs), each also as a ratio to plain JSON. Two
checks keep the comparison honest: the JSON and JSON + zlib 6 codecs must produce
exactly :func:`encode_telemetry`'s bytes, and every codec must decode to the
document it encoded. For context, the shipped path as the services call it:
:func:`encode_telemetry` (building the document too) and :func:`decode_telemetry`
(inflate, parse and validate against the contract). And the cost of making one
batch durable at the edge: :meth:`DiskQueue.put` of the shipped payload, which
commits and fsyncs before it returns, on the file system of the temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgpack

from benchmarks.ingest_write import DEFAULT_DBC, FLEET, decoded_records
from roadwave.contract import TelemetryBatch, decode_telemetry, encode_telemetry, telemetry_topic
from roadwave.spool import DiskQueue

#: The edge closes a batch after this long (``[batch] max_age_s``): one batch per vehicle and window.
BATCH_WINDOW_NS = 10**9
SHIPPED = "JSON + zlib 6 (shipped)"


@dataclass(frozen=True)
class EncodingWorkload:
    """``vins`` simulated drives cut into 1 s batches; ``spool_writes`` durable puts."""

    vins: int = 2
    seed: int = 1
    repeat: int = 5
    spool_writes: int = 100

    def __post_init__(self) -> None:
        for name in ("vins", "repeat", "spool_writes"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoding workload: {name} must be at least 1, not {getattr(self, name)}")


@dataclass(frozen=True)
class Codec:
    """A way to turn a payload document into bytes and back."""

    name: str
    encode: Callable[[dict[str, Any]], bytes]
    decode: Callable[[bytes], Any]


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def _msgpack(document: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(document)
    return packed


CODECS = (
    Codec("JSON", _json, json.loads),
    Codec(SHIPPED, lambda d: zlib.compress(_json(d), 6), lambda b: json.loads(zlib.decompress(b))),
    Codec("JSON + zlib 1", lambda d: zlib.compress(_json(d), 1), lambda b: json.loads(zlib.decompress(b))),
    Codec("msgpack", _msgpack, msgpack.unpackb),
    Codec(
        "msgpack + zlib 6",
        lambda d: zlib.compress(_msgpack(d), 6),
        lambda b: msgpack.unpackb(zlib.decompress(b)),
    ),
)


@dataclass
class CodecResult:
    """One codec over the whole workload; times are the best of ``repeat`` runs."""

    name: str
    bytes: int
    encode_s: float
    decode_s: float


@dataclass
class EncodingResult:
    """Measured figures of one encoding benchmark run."""

    batches: int
    records: int
    samples: int
    repeat: int
    codecs: list[CodecResult]
    contract_encode_s: float
    contract_decode_s: float
    spool_put_s: list[float]
    spool_filesystem: str

    def codec(self, name: str) -> CodecResult:
        """The figures of one codec by name."""
        return next(codec for codec in self.codecs if codec.name == name)

    def per_sample_us(self, seconds: float) -> float:
        """A time over the whole workload in microseconds per sample."""
        return seconds / self.samples * 1e6

    def ratios(self, codec: CodecResult) -> tuple[float, float, float]:
        """Bytes, encode time and decode time of ``codec`` as ratios to plain JSON."""
        base = self.codecs[0]
        return codec.bytes / base.bytes, codec.encode_s / base.encode_s, codec.decode_s / base.decode_s

    @property
    def spool_put_median_s(self) -> float:
        """The median durable spool write of one batch."""
        return statistics.median(self.spool_put_s)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view with the derived figures."""
        data = asdict(self)
        for codec, view in zip(self.codecs, data["codecs"], strict=True):
            size, encode, decode = self.ratios(codec)
            view.update(
                bytes_per_sample=codec.bytes / self.samples,
                encode_us_per_sample=self.per_sample_us(codec.encode_s),
                decode_us_per_sample=self.per_sample_us(codec.decode_s),
                bytes_ratio=size,
                encode_ratio=encode,
                decode_ratio=decode,
            )
        data.update(spool_put_median_s=self.spool_put_median_s)
        return data


def one_second_batches(vins: int, seed: int, dbc: Path = DEFAULT_DBC) -> list[TelemetryBatch]:
    """The decoded drives cut into one batch per vehicle and :data:`BATCH_WINDOW_NS`."""
    per_vin, _ = decoded_records(vins, seed, dbc)
    batches: list[TelemetryBatch] = []
    for vin, records in per_vin.items():
        windows: dict[int, list[Any]] = {}
        for record in records:
            windows.setdefault((record.t_ns - records[0].t_ns) // BATCH_WINDOW_NS, []).append(record)
        batches.extend(TelemetryBatch(vin, FLEET, seq, chunk) for seq, chunk in enumerate(windows.values()))
    return batches


def check_codecs(batches: Sequence[TelemetryBatch], documents: Sequence[dict[str, Any]]) -> None:
    """Raise if a codec is not what it claims: shipped bytes differ, or a round trip loses data."""
    by_name = {codec.name: codec for codec in CODECS}
    for batch, document in zip(batches, documents, strict=True):
        if by_name["JSON"].encode(document) != encode_telemetry(batch):
            raise RuntimeError("the JSON codec does not write what encode_telemetry writes")
        if by_name[SHIPPED].encode(document) != encode_telemetry(batch, compress=True):
            raise RuntimeError("the shipped codec does not write what encode_telemetry(compress=True) writes")
        for codec in CODECS:
            if codec.decode(codec.encode(document)) != document:
                raise RuntimeError(f"{codec.name} does not decode to the document it encoded")


def _timed(function: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Seconds to call ``function`` on every item (after a garbage collection)."""
    gc.collect()
    started = time.perf_counter()
    for item in items:
        function(item)
    return time.perf_counter() - started


def filesystem_of(path: Path) -> str:
    """The type of the file system ``path`` is on (from /proc/mounts), or ``unknown``."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    matches = [
        (point, kind)
        for point, kind in mounts
        if resolved == point or resolved.startswith(point.rstrip("/") + "/")
    ]
    return max(matches, key=lambda match: len(match[0]))[1] if matches else "unknown"


def time_spool_puts(payloads: Sequence[tuple[str, bytes]], count: int) -> tuple[list[float], str]:
    """Seconds of each of ``count`` durable :meth:`DiskQueue.put` calls, and the file system used."""
    with tempfile.TemporaryDirectory(prefix="roadwave-bench-spool-") as tmp:
        spool = DiskQueue(Path(tmp) / "spool.sqlite", max_bytes=2**30)
        try:
            times = []
            for index in range(count):
                topic, payload = payloads[index % len(payloads)]
                started = time.perf_counter()
                spool.put(topic, payload)
                times.append(time.perf_counter() - started)
        finally:
            spool.close()
        return times, filesystem_of(Path(tmp))


def run(
    workload: EncodingWorkload = EncodingWorkload(),
    dbc: Path = DEFAULT_DBC,
    progress: Callable[[str], None] = lambda _: None,
) -> EncodingResult:
    """Encode and decode the workload with every codec ``repeat`` times; time the spool writes."""
    progress(f"encoding: decoding {workload.vins} simulated drive(s) into 1 s batches")
    batches = one_second_batches(workload.vins, workload.seed, dbc)
    documents = [json.loads(encode_telemetry(batch)) for batch in batches]
    check_codecs(batches, documents)
    shipped = [(telemetry_topic(b.fleet, b.vin), encode_telemetry(b, compress=True)) for b in batches]
    encoded = {codec.name: [codec.encode(document) for document in documents] for codec in CODECS}
    encode_runs: dict[str, list[float]] = {codec.name: [] for codec in CODECS}
    decode_runs: dict[str, list[float]] = {codec.name: [] for codec in CODECS}
    contract_runs: tuple[list[float], list[float]] = ([], [])
    for attempt in range(workload.repeat):
        progress(f"encoding: run {attempt + 1}/{workload.repeat}")
        for codec in CODECS:
            encode_runs[codec.name].append(_timed(codec.encode, documents))
            decode_runs[codec.name].append(_timed(codec.decode, encoded[codec.name]))
        contract_runs[0].append(_timed(lambda batch: encode_telemetry(batch, compress=True), batches))
        contract_runs[1].append(_timed(lambda message: decode_telemetry(*message), shipped))
    progress(f"encoding: {workload.spool_writes} durable spool writes")
    spool_times, filesystem = time_spool_puts(shipped, workload.spool_writes)
    return EncodingResult(
        batches=len(batches),
        records=sum(len(batch.records) for batch in batches),
        samples=sum(batch.sample_count for batch in batches),
        repeat=workload.repeat,
        codecs=[
            CodecResult(
                name=codec.name,
                bytes=sum(len(payload) for payload in encoded[codec.name]),
                encode_s=min(encode_runs[codec.name]),
                decode_s=min(decode_runs[codec.name]),
            )
            for codec in CODECS
        ],
        contract_encode_s=min(contract_runs[0]),
        contract_decode_s=min(contract_runs[1]),
        spool_put_s=spool_times,
        spool_filesystem=filesystem,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.encoding``: this benchmark alone, as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.encoding", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--vins", type=int, default=EncodingWorkload.vins)
    parser.add_argument("--repeat", type=int, default=EncodingWorkload.repeat)
    args = parser.parse_args(argv)
    result = run(
        EncodingWorkload(vins=args.vins, repeat=args.repeat), progress=lambda t: print(t, file=sys.stderr)
    )
    print(json.dumps(result.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
