#!/usr/bin/env python3
"""Seeds the replication_wire, topic_catalog and crdt_row corpora from real replication traffic.

Runs a mesh on loopback with a recording proxy in front of each region's Kafka listener, and
points every region's `--peer` at the other region's proxy, so each pull and seed between the
regions (private API keys 32000 and 32001 on the Kafka port) passes through a proxy:

1. regions `eu` and `us` replicate each other; kcat produces plain records (every codec) to
   both, `causeway topic create` makes a compacted table topic (`cleanup.policy=compact`, short
   `segment.ms`) that kcat writes JSON rows to in both regions (`put`, `patch`, `incr`, `add`,
   `remove`, tombstones), a config is altered and a topic deleted (so the catalog changes), and
   segments roll so the cleaner writes merged rows (`causeway.row` headers, batch bit 7);
2. `eu` restarts with a third region `sa` as a peer, and `sa` joins with `--seed-from eu`, so
   seed requests and responses (compacted segments included) cross the proxy too.

Written into `fuzz/corpus/` (deduplicated by SHA-1 of the content):
- `replication_wire/`: every peer request body (after the 8-byte header: API key, version,
  correlation id) and every response body to one (after the 4-byte correlation id);
- `topic_catalog/`: the `catalog` field of each pull response that carries one, each alone and
  twice (the target splits its input in halves and merges them);
- `crdt_row/`: each distinct `causeway.row` header value found in the captured frames (and in a
  kcat read of the table), alone and in pairs padded with spaces to equal halves.

Usage (from the repository root; any release build of the broker):
    python3 fuzz/seed_replication.py [path/to/causeway]
"""

import hashlib
import itertools
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed_corpus import free_port  # noqa: E402  (one helper for both seeding scripts)

HERE = os.path.dirname(os.path.abspath(__file__))
PULL_KEY, SEED_KEY = 32000, 32001
SECRET = "fuzz-seed-secret"

# (direction, api key, body) for every peer request and response seen.
FRAMES = []
FRAMES_LOCK = threading.Lock()


class Connection:
    """One proxied connection: correlation ids of the peer requests awaiting a response."""

    def __init__(self):
        self.pending = {}
        self.lock = threading.Lock()


def frames_of(buffered):
    """Splits complete length-prefixed frames off the front; returns (frames, rest)."""
    frames = []
    while len(buffered) >= 4:
        (length,) = struct.unpack(">i", buffered[:4])
        if length < 0 or len(buffered) < 4 + length:
            break
        frames.append(buffered[4 : 4 + length])
        buffered = buffered[4 + length :]
    return frames, buffered


def pump(source, sink, conn, is_request):
    buffered = b""
    while True:
        try:
            chunk = source.recv(1 << 20)
        except OSError:
            chunk = b""
        if not chunk:
            for sock in (sink, source):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
        # Record before forwarding, so a request is known before its response can arrive.
        buffered += chunk
        frames, buffered = frames_of(buffered)
        for frame in frames:
            if is_request and len(frame) >= 8:
                api_key, _version, correlation = struct.unpack(">hhi", frame[:8])
                if api_key in (PULL_KEY, SEED_KEY):
                    with conn.lock:
                        conn.pending[correlation] = api_key
                    with FRAMES_LOCK:
                        FRAMES.append(("request", api_key, frame[8:]))
            elif not is_request and len(frame) >= 4:
                (correlation,) = struct.unpack(">i", frame[:4])
                with conn.lock:
                    api_key = conn.pending.pop(correlation, None)
                if api_key is not None:
                    with FRAMES_LOCK:
                        FRAMES.append(("response", api_key, frame[4:]))
        try:
            sink.sendall(chunk)
        except OSError:
            return


def proxy(listener, upstream_port):
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
        except OSError:
            client.close()
            continue
        conn = Connection()
        threading.Thread(target=pump, args=(client, upstream, conn, True), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, conn, False), daemon=True).start()


class Region:
    def __init__(self, binary, root, name):
        self.binary, self.name = binary, name
        self.data_dir = os.path.join(root, name)
        self.kafka, self.http = free_port(), free_port()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.proxy_port = self.listener.getsockname()[1]
        threading.Thread(target=proxy, args=(self.listener, self.kafka), daemon=True).start()
        self.process = None
        self.log = open(os.path.join(root, name + ".log"), "ab")

    @property
    def bootstrap(self):
        return "127.0.0.1:%d" % self.kafka

    def start(self, peers, extra=()):
        args = [
            self.binary,
            "--region", self.name,
            "--data-dir", self.data_dir,
            "--kafka-listen", self.bootstrap,
            "--http-listen", "127.0.0.1:%d" % self.http,
            "--log-retention-check-interval-ms", "500",
            "--log-segment-ms-min", "100",
            "--num-partitions", "2",
        ]
        for peer in peers:
            args += ["--peer", "%s@127.0.0.1:%d" % (peer.name, peer.proxy_port)]
        args += list(extra)
        env = dict(os.environ, CAUSEWAY_REPLICATION_SECRET=SECRET)
        self.process = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env)
        for _ in range(600):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.http, timeout=1):
                    return
            except Exception:
                if self.process.poll() is not None:
                    sys.exit("region %s exited: see %s.log" % (self.name, self.data_dir))
                time.sleep(0.1)
        sys.exit("region %s did not become ready" % self.name)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def kcat(bootstrap, args, data=None, timeout=30):
    try:
        return subprocess.run(
            ["kcat", "-b", bootstrap, "-X", "broker.address.family=v4"] + args,
            input=data, capture_output=True, timeout=timeout,
        ).stdout
    except subprocess.TimeoutExpired:
        return b""


def causeway(binary, args):
    subprocess.run([binary] + args, capture_output=True, timeout=30)


def drive(binary, eu, us):
    for region in (eu, us):
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
            lines = "".join("k%d:%s-%s-%d\n" % (i, region.name, codec, i) for i in range(10))
            kcat(region.bootstrap, ["-P", "-t", "plain", "-K", ":", "-z", codec], lines.encode())
    table = "rows"
    causeway(binary, ["topic", "create", "-b", eu.bootstrap, "-p", "2", table,
                      "-c", "cleanup.policy=compact", "-c", "segment.ms=1000"])
    causeway(binary, ["topic", "create", "-b", eu.bootstrap, "short-lived"])
    time.sleep(2)
    writes = [
        ([], {"name": "ada", "age": 36}),
        (["causeway.op=patch"], {"age": 37, "city": "london"}),
        (["causeway.op=incr"], {"views": 1, "stats": {"clicks": 2}}),
        (["causeway.op=add", "causeway.path=/tags"], ["math", "engines"]),
        (["causeway.op=remove", "causeway.path=/tags"], ["engines"]),
        (["causeway.op=patch"], {"city": None, "nested": {"a": [1, 2, 3], "b": "x"}}),
        (["causeway.op=incr"], {"views": -3, "score": 1.5}),
    ]
    for round_ in range(4):
        for index, (headers, value) in enumerate(writes):
            region = (eu, us)[(round_ + index) % 2]
            args = ["-P", "-t", table, "-K", "|"]
            for header in headers:
                args += ["-H", header]
            lines = "".join(
                "user-%d|%s\n" % (key, json.dumps(value)) for key in range(round_, round_ + 3)
            )
            kcat(region.bootstrap, args, lines.encode())
        # A plain value, and a tombstone (kcat -Z: an empty value is null).
        kcat(eu.bootstrap, ["-P", "-t", table, "-K", "|"], b"blob-%d|not json\n" % round_)
        if round_ == 1:
            kcat(us.bootstrap, ["-P", "-t", table, "-K", "|", "-Z"], b"user-1|\n")
        time.sleep(1.5)  # past segment.ms: the next write rolls the segment
    causeway(binary, ["topic", "alter-config", "-b", us.bootstrap, table, "--set", "retention.ms=86400000"])
    causeway(binary, ["topic", "delete", "-b", eu.bootstrap, "short-lived"])
    # Rolls and cleaner passes (every 500 ms), then pulls carry the compacted state.
    for _ in range(5):
        time.sleep(2)
        kcat(eu.bootstrap, ["-P", "-t", table, "-K", "|"], b"tick|{\"t\":1}\n")


def rows_in(data):
    """`causeway.row` header values in a byte string (Kafka record header encoding)."""
    found = []
    marker = b"causeway.row"
    at = data.find(marker)
    while at >= 0:
        pos, shift, raw = at + len(marker), 0, 0
        while pos < len(data) and shift < 35:
            byte = data[pos]
            raw |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if byte < 0x80:
                break
        length = (raw >> 1) ^ -(raw & 1)
        if 0 < length <= len(data) - pos:
            found.append(bytes(data[pos : pos + length]))
        at = data.find(marker, at + 1)
    return found


def catalog_of(body):
    """A pull response's catalog field (error, region, flag, length, bytes), or None."""

    def varint(at):
        value, shift = 0, 0
        while at < len(body):
            byte = body[at]
            value |= (byte & 0x7F) << shift
            at += 1
            shift += 7
            if byte < 0x80:
                return value, at
        raise ValueError("truncated")

    try:
        _error, at = varint(0)
        _region, at = varint(at)
        flag, at = varint(at)
        if flag != 1:
            return None
        length, at = varint(at)
        if at + length > len(body):
            return None
        return body[at : at + length]
    except ValueError:
        return None


def save(directory, data):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as out:
            out.write(data)
        return 1
    return 0


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/causeway")
    root = tempfile.mkdtemp(prefix="causeway-fuzz-seed-")
    eu, us, sa = (Region(binary, root, name) for name in ("eu", "us", "sa"))
    table_rows = b""
    try:
        eu.start([us])
        us.start([eu])
        drive(binary, eu, us)
        table_rows = kcat(eu.bootstrap, ["-C", "-t", "rows", "-o", "beginning", "-e", "-q",
                                         "-f", "%h\\n"])
        # sa joins, seeded from eu (which must list it as a peer).
        eu.stop()
        eu.start([us, sa])
        sa.start([eu, us], ["--seed-from", "eu"])
        time.sleep(5)
    finally:
        for region in (sa, us, eu):
            region.stop()
    with FRAMES_LOCK:
        frames = list(FRAMES)
    corpus = os.path.join(HERE, "corpus")
    counts = {"replication_wire": 0, "topic_catalog": 0, "crdt_row": 0}
    kinds = {}
    catalogs, rows = set(), set()
    for direction, api_key, body in frames:
        kinds[(direction, api_key)] = kinds.get((direction, api_key), 0) + 1
        counts["replication_wire"] += save(os.path.join(corpus, "replication_wire"), body)
        if direction == "response" and api_key == PULL_KEY:
            catalog = catalog_of(body)
            if catalog:
                catalogs.add(bytes(catalog))
        rows.update(rows_in(body))
    for line in table_rows.split(b"\n"):
        if line.startswith(b"causeway.row="):
            rows.add(line[len(b"causeway.row="):])
    for catalog in catalogs:
        counts["topic_catalog"] += save(os.path.join(corpus, "topic_catalog"), catalog)
        counts["topic_catalog"] += save(os.path.join(corpus, "topic_catalog"), catalog + catalog)
    for a, b in itertools.combinations(sorted(catalogs), 2):
        if len(a) == len(b):
            counts["topic_catalog"] += save(os.path.join(corpus, "topic_catalog"), a + b)
    # Rows, smallest first, at most 16 distinct (so pairs stay in the low hundreds).
    rows = sorted(rows, key=lambda r: (len(r), r))[:16]
    for row in rows:
        counts["crdt_row"] += save(os.path.join(corpus, "crdt_row"), row)
    for a, b in itertools.product(rows, repeat=2):
        width = max(len(a), len(b))
        counts["crdt_row"] += save(
            os.path.join(corpus, "crdt_row"), a.ljust(width, b" ") + b.ljust(width, b" ")
        )
    shutil.rmtree(root, ignore_errors=True)
    names = {PULL_KEY: "pull", SEED_KEY: "seed"}
    print("frames: " + ", ".join(
        "%d %s %ss" % (n, names[key], direction) for (direction, key), n in sorted(kinds.items())
    ))
    print("distinct catalogs: %d, distinct rows: %d" % (len(catalogs), len(rows)))
    print("new files: " + ", ".join("%s %d" % item for item in counts.items()))


if __name__ == "__main__":
    main()
