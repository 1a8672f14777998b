#!/usr/bin/env python3
"""Seeds the fuzz corpora from real client traffic.

Starts a broker that advertises a recording proxy in front of it, drives kcat through the
proxy (metadata, produce with every compression codec, consume, a consumer group), and writes
every request frame the client sent to `corpus/request/`, and the record batches inside them to
`corpus/record_batch/` (in that target's input layout: attributes byte, count byte, records).
The replication_wire, topic_catalog and crdt_row corpora come from `seed_replication.py`.

Usage (from the repository root, after `cargo build --release`):
    python3 fuzz/seed_corpus.py [path/to/causeway]
"""

import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMES = []
FRAMES_LOCK = threading.Lock()


def pump(source, sink, record):
    """Copies bytes from source to sink; when recording, splits them into frames."""
    buffered = b""
    while True:
        try:
            chunk = source.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        sink.sendall(chunk)
        if record:
            buffered += chunk
            while len(buffered) >= 4:
                (length,) = struct.unpack(">i", buffered[:4])
                if length < 0 or len(buffered) < 4 + length:
                    break
                with FRAMES_LOCK:
                    FRAMES.append(buffered[: 4 + length])
                buffered = buffered[4 + length :]


def proxy(listener, broker):
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(broker)
        threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()


def batches_in(frame):
    """Record batches (magic 2) inside a frame, as (attributes, count, records section)."""
    found = []
    for start in range(0, len(frame) - 61):
        if frame[start + 16] != 2:
            continue
        (length,) = struct.unpack(">i", frame[start + 8 : start + 12])
        end = start + 12 + length
        if length < 49 or end > len(frame):
            continue
        (attributes,) = struct.unpack(">h", frame[start + 21 : start + 23])
        (count,) = struct.unpack(">i", frame[start + 57 : start + 61])
        if 0 <= count < 0xFE and 0 <= attributes < 0x100:
            found.append((attributes, count, frame[start + 61 : end]))
    return found


def save(directory, data):
    os.makedirs(directory, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(directory, name), "wb") as out:
        out.write(data)


def free_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def start_broker(binary, data_dir, kafka_port, http_port, advertised_port):
    broker = subprocess.Popen(
        [
            binary,
            "--data-dir", data_dir,
            "--kafka-listen", "127.0.0.1:%d" % kafka_port,
            "--http-listen", "127.0.0.1:%d" % http_port,
            "--advertised-addr", "127.0.0.1:%d" % advertised_port,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", kafka_port), timeout=1).close()
            return broker
        except OSError:
            time.sleep(0.1)
    broker.kill()
    sys.exit("the broker did not start")


def drive(via):
    """Real client traffic through the proxy."""
    topic = "fuzz-seed"
    kcat = ["kcat", "-b", via, "-X", "broker.address.family=v4"]

    def run(args, data=None, timeout=30):
        try:
            subprocess.run(kcat + args, input=data, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    run(["-L"])
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        lines = "".join("k%d:value-%s-%d\n" % (i, codec, i) for i in range(20))
        run(["-P", "-t", topic, "-K", ":", "-z", codec], lines.encode())
    run(["-C", "-t", topic, "-o", "beginning", "-e", "-q"])
    run(["-G", "fuzz-seed-group", topic, "-o", "beginning", "-e", "-q"], timeout=60)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/causeway"
    kafka_port, http_port = free_port(), free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    proxy_port = listener.getsockname()[1]
    threading.Thread(
        target=proxy, args=(listener, ("127.0.0.1", kafka_port)), daemon=True
    ).start()
    with tempfile.TemporaryDirectory() as data_dir:
        broker = start_broker(binary, data_dir, kafka_port, http_port, proxy_port)
        try:
            drive("127.0.0.1:%d" % proxy_port)
        finally:
            broker.terminate()
            broker.wait(timeout=30)
    with FRAMES_LOCK:
        frames = list(FRAMES)
    batches = 0
    for frame in frames:
        save(os.path.join(HERE, "corpus", "request"), frame)
        for attributes, count, section in batches_in(frame):
            save(
                os.path.join(HERE, "corpus", "record_batch"),
                bytes([attributes & 0x07, count]) + section,
            )
            batches += 1
    print("saved %d request frames and %d record batches" % (len(frames), batches))


if __name__ == "__main__":
    main()
